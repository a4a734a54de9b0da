"""The caches keep only the fields the operator reads: what an attempt shows is the same
from a trimmed pod and Job as from the objects the API server sends."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from simtask.podstate import compute_seconds, observe_attempt
from simtask.reconciler import _trim_job, _trim_pod
from tests.unit import fixtures as f

Obj = dict[str, Any]

CASES = {
    "running": (f.job(active=1), f.pod(phase="Running", state=f.running(3))),
    "succeeded": (
        f.job(succeeded=1, conditions=f.job_complete(12)),
        f.pod(phase="Succeeded", state=f.terminated(0, started=3, finished=11)),
    ),
    "exit-3": (
        f.job(failed=1, conditions=f.job_failed(10)),
        f.pod(phase="Failed", state=f.terminated(3, started=3, finished=9)),
    ),
    "oom": (
        f.job(failed=1, conditions=f.job_failed(10), memory="2Gi"),
        f.pod(
            phase="Failed",
            state=f.terminated(137, started=3, finished=9, reason="OOMKilled"),
            memory_limit="2Gi",
        ),
    ),
    "deleted-on-spot": (
        f.job(active=1),
        f.pod(phase="Running", state=f.running(3), deleted=20, node_name="cpu-spot-1"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trimmed_objects_show_the_same_attempt(case: str) -> None:
    job, pod = CASES[case]
    node = f.node(pod["spec"].get("nodeName") or "cpu-standard-1")
    full = observe_attempt(job, [pod], node, spot=False)
    small_job, small_pod = copy.deepcopy(job), copy.deepcopy(pod)
    _trim_job(small_job)
    _trim_pod(small_pod)
    assert observe_attempt(small_job, [small_pod], node, spot=False) == full
    start, end = f.at(3), f.at(9)
    assert compute_seconds(small_job, start, end) == compute_seconds(job, start, end)
    # ...and they are smaller: no env, volumes or commands are kept.
    assert "volumes" not in small_pod["spec"] and "env" not in small_pod["spec"]["containers"][0]
    assert len(repr(small_job)) < len(repr(job))
