"""Resubmission policy: budget, backoff, and where the next attempt goes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from simtask.resubmission import placement_group, resubmission_allowed, resubmit_backoff


@pytest.mark.parametrize(
    ("spec", "resubmissions", "allowed"),
    [
        ({}, 0, True),
        ({}, 2, True),
        ({}, 3, False),  # maxResubmissions defaults to 3
        ({"maxResubmissions": 0}, 0, False),
        ({"maxResubmissions": 5}, 4, True),
        ({"resubmitOnPreemption": False}, 0, False),
    ],
)
def test_resubmission_allowed(spec: dict[str, object], resubmissions: int, allowed: bool) -> None:
    assert resubmission_allowed(spec, resubmissions) is allowed


def test_backoff_doubles_and_is_capped() -> None:
    assert [resubmit_backoff(n).total_seconds() for n in range(4)] == [2, 4, 8, 16]
    assert resubmit_backoff(50) == timedelta(minutes=5)


def test_fallback_group_after_enough_spot_preemptions() -> None:
    spec = {
        "machineGroup": "cpu-spot",
        "fallbackMachineGroup": "cpu-standard",
        "fallbackAfterPreemptions": 2,
    }
    assert placement_group(spec, 0) == "cpu-spot"
    assert placement_group(spec, 1) == "cpu-spot"
    assert placement_group(spec, 2) == "cpu-standard"
    assert (
        placement_group({"machineGroup": "g", "fallbackMachineGroup": "f"}, 2) == "f"
    )  # default 2
    assert placement_group({"machineGroup": "g"}, 9) == "g"
    assert placement_group({}, 0) is None
