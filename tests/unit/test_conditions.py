"""Conditions follow the API conventions and tell kstatus and kubectl wait the truth."""

from __future__ import annotations

from simtask.conditions import condition, task_conditions
from simtask.lifecycle import Phase
from tests.unit import fixtures as f


def by_type(conds: list[dict[str, object]]) -> dict[str, object]:
    return {str(c["type"]): c["status"] for c in conds}


def test_running_task_is_reconciling_and_has_no_outcome_yet() -> None:
    conds = task_conditions(
        [], Phase.COMPUTATION_STARTED, terminal=False, message="m", generation=2, now=f.at(0)
    )
    assert by_type(conds) == {"Ready": "False", "Reconciling": "True", "Stalled": "False"}
    assert all(c["reason"] == "ComputationStarted" and c["observedGeneration"] == 2 for c in conds)


def test_success_and_failure() -> None:
    ok = task_conditions([], Phase.SUCCESS, terminal=True, message="", generation=1, now=f.at(0))
    assert by_type(ok) == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Succeeded": "True",
        "Failed": "False",
    }
    bad = task_conditions(
        [], Phase.TTL_EXCEEDED, terminal=True, message="", generation=1, now=f.at(0)
    )
    assert by_type(bad) == {
        "Ready": "False",
        "Reconciling": "False",
        "Stalled": "True",
        "Succeeded": "False",
        "Failed": "True",
    }


def test_last_transition_time_moves_only_with_status() -> None:
    first = condition([], "Ready", "False", "Submitted", "", 1, f.at(0))
    same = condition([first], "Ready", "False", "Started", "other", 1, f.at(60))
    flipped = condition([same], "Ready", "True", "Success", "", 1, f.at(120))
    assert same["lastTransitionTime"] == f.ts(0) and same["reason"] == "Started"
    assert flipped["lastTransitionTime"] == f.ts(120)
