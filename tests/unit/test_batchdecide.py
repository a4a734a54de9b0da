"""The decisions of a SimulationBatch pass, from plain dicts: dispatch under parallelism,
the summary status, hold, kill, retry, maxFailedInstances, ttlAfterFinished."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simtask import names
from simtask.batchdecide import (
    CreateInstance,
    DeleteBatch,
    Instances,
    PatchInstance,
    decide_batch,
    instance_task,
    merge_diff,
    render,
)
from simtask.builders import build_job
from simtask.conditions import find_condition
from simtask.timestamps import ts

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
Obj = dict[str, Any]


def batch(**spec: Any) -> Obj:
    base: Obj = {"template": {"image": "sim:1", "command": ["run"]}, "count": 10}
    base.update(spec)
    return {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationBatch",
        "metadata": {
            "name": "sweep",
            "namespace": "lab",
            "uid": "b-uid",
            "generation": 1,
            "resourceVersion": "7",
        },
        "spec": {k: v for k, v in base.items() if v is not None},
    }


def instance(b: Obj, index: int, phase: str | None, *, batch_retry: int = 0, **spec: Any) -> Obj:
    """An instance task as its controller left it in `phase`."""
    task = instance_task(b, index, {})
    task["metadata"].update(uid=f"t{index}", resourceVersion=str(100 + index), generation=1)
    task["metadata"]["annotations"][names.ANNOTATION_BATCH_RETRY] = str(batch_retry)
    task["spec"].update(spec)
    status: Obj = {"retry": int(spec.get("retry") or 0)}
    if phase is not None:
        status["phase"] = phase
    terminal = phase in ("Success", "Failed", "Killed", "TTLExceeded")
    if terminal:
        status["conditions"] = [
            {"type": "Succeeded", "status": "True" if phase == "Success" else "False"}
        ]
        status["attempts"] = [{"attempt": 1, "cpuSeconds": 2.5, "gpuSeconds": 0}]
    task["status"] = status
    return task


def run(b: Obj, tasks: list[Obj], taken: frozenset[int] = frozenset(), now: datetime = NOW):
    by_index = {int(t["metadata"]["labels"][names.LABEL_INDEX]): t for t in tasks}
    return decide_batch(b, Instances(by_index, taken), now)


def creates(decision: Any) -> list[int]:
    return [a.index for a in decision.actions if isinstance(a, CreateInstance)]


def patches(decision: Any) -> dict[int, Obj]:
    return {a.index: a.patch for a in decision.actions if isinstance(a, PatchInstance)}


def test_a_new_batch_creates_as_many_instances_as_parallelism_allows() -> None:
    d = run(batch(parallelism=3), [])
    assert creates(d) == [0, 1, 2]
    assert d.status["phase"] == "Submitted"
    assert d.status["instances"]["total"] == 10
    assert d.status["instances"]["pending"] == 10


def test_without_parallelism_every_instance_is_created() -> None:
    assert creates(run(batch(count=4), [])) == [0, 1, 2, 3]


def test_parallelism_counts_unfinished_instances_only() -> None:
    b = batch(parallelism=3)
    tasks = [
        instance(b, 0, "Success"),
        instance(b, 1, "ComputationStarted"),
        instance(b, 2, "Submitted"),
        # Preempted, a resubmission to come: no Succeeded condition, so still unfinished.
        instance(b, 3, "SpotPreempted"),
    ]
    d = run(b, tasks)
    assert creates(d) == []
    tasks[1] = instance(b, 1, "Success")
    assert creates(run(b, tasks)) == [4]


def test_the_instance_manifest() -> None:
    b = batch(
        template={
            "image": "sim:1",
            "hold": True,
            "kill": True,
            "retry": 4,
            "ttlAfterFinished": "1h",
            "podTemplate": {
                "metadata": {
                    "annotations": {
                        "case": "re-$(SIMTASK_PARAM_RE)-$(SIMTASK_INDEX)",
                        "other": "$(HOME)",
                    }
                }
            },
        },
        count=2,
        parameters=[{"RE": "100"}, {"RE": "200"}],
        retry=2,
    )
    (first, second) = [a.task for a in run(b, []).actions if isinstance(a, CreateInstance)]
    meta = second["metadata"]
    assert meta["name"] == "sweep-1"
    assert meta["labels"] == {names.LABEL_BATCH: "sweep", names.LABEL_INDEX: "1"}
    assert json.loads(meta["annotations"][names.ANNOTATION_PARAMETERS]) == {"RE": "200"}
    assert meta["annotations"][names.ANNOTATION_BATCH_RETRY] == "2"
    (owner,) = meta["ownerReferences"]
    assert owner["kind"] == "SimulationBatch" and owner["uid"] == "b-uid" and owner["controller"]
    # The batch owns hold, kill, retry and ttlAfterFinished of its instances.
    assert second["spec"]["hold"] is False
    assert {"kill", "retry", "ttlAfterFinished"}.isdisjoint(second["spec"])
    annotations = second["spec"]["podTemplate"]["metadata"]["annotations"]
    assert annotations == {"case": "re-200-1", "other": "$(HOME)"}
    assert first["spec"]["podTemplate"]["metadata"]["annotations"]["case"] == "re-100-0"


def test_indexes_and_their_parameters() -> None:
    b = batch(count=None, indexes="5,9-10", parameters=[{"X": "a"}, {"X": "b"}, {"X": "c"}])
    tasks = [a.task for a in run(b, []).actions if isinstance(a, CreateInstance)]
    assert [t["metadata"]["name"] for t in tasks] == ["sweep-5", "sweep-9", "sweep-10"]
    assert [t["metadata"]["annotations"][names.ANNOTATION_PARAMETERS] for t in tasks] == [
        '{"X": "a"}',
        '{"X": "b"}',
        '{"X": "c"}',
    ]


def test_pods_of_an_instance_carry_batch_index_and_parameters() -> None:
    b = batch(count=1, parameters=[{"RE": "100", "mesh": "fine"}])
    (action,) = run(b, []).actions
    assert isinstance(action, CreateInstance)
    task = action.task
    task["metadata"]["uid"] = "t0"
    job = build_job(task, 1, group=None, previous_attempt_phase=None)
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SIMTASK_BATCH"] == "sweep"
    assert env["SIMTASK_INDEX"] == "0"
    assert env["SIMTASK_PARAM_RE"] == "100"
    assert env["SIMTASK_PARAM_mesh"] == "fine"
    assert env["SIMTASK_TASK"] == "sweep-0"


def test_a_plain_task_gets_no_batch_environment() -> None:
    task = {"metadata": {"name": "t", "namespace": "n", "uid": "u"}, "spec": {"image": "i"}}
    job = build_job(task, 1, group=None, previous_attempt_phase=None)
    env = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not any(n.startswith(("SIMTASK_BATCH", "SIMTASK_INDEX", "SIMTASK_PARAM")) for n in env)


def test_every_instance_succeeded() -> None:
    b = batch(count=3)
    b["status"] = {"phase": "Running", "startTime": ts(NOW - timedelta(minutes=1))}
    d = run(b, [instance(b, i, "Success") for i in range(3)])
    s = d.status
    assert s["phase"] == "Success"
    assert s["succeededIndexes"] == "0-2" and s["failedIndexes"] == ""
    assert s["succeeded"] == 3 and s["failed"] == 0
    assert s["instances"]["Success"] == 3 and s["instances"]["pending"] == 0
    assert s["cpuSeconds"] == 7.5
    assert s["completionTime"] == ts(NOW)
    assert find_condition({"status": s}, "Succeeded")["status"] == "True"  # type: ignore[index]
    assert find_condition({"status": s}, "Ready")["status"] == "True"  # type: ignore[index]


def test_some_failed_the_batch_fails_with_their_indexes() -> None:
    b = batch(count=10)
    tasks = [instance(b, i, "Failed" if i in (3, 7) else "Success") for i in range(10)]
    s = run(b, tasks).status
    assert s["phase"] == "Failed"
    assert s["failedIndexes"] == "3,7"
    assert s["succeededIndexes"] == "0-2,4-6,8,9"
    assert find_condition({"status": s}, "Failed")["status"] == "True"  # type: ignore[index]
    assert find_condition({"status": s}, "Succeeded")["status"] == "False"  # type: ignore[index]


def test_retry_reruns_only_the_failed_instances_with_the_current_template() -> None:
    b = batch(count=10, retry=1)
    tasks = [instance(b, i, "Failed" if i in (3, 7) else "Success") for i in range(10)]
    b["spec"]["template"]["podTemplate"] = {"metadata": {"annotations": {"fixed": "yes"}}}
    d = run(b, tasks)
    p = patches(d)
    assert sorted(p) == [3, 7]
    assert p[3]["spec"]["retry"] == 1 and p[3]["spec"]["kill"] is False
    assert p[3]["spec"]["podTemplate"] == {"metadata": {"annotations": {"fixed": "yes"}}}
    assert p[3]["metadata"]["annotations"] == {names.ANNOTATION_BATCH_RETRY: "1"}
    assert p[3]["metadata"]["resourceVersion"] == "103"
    assert d.status["phase"] == "Running"
    assert "completionTime" not in d.status
    # Once patched (the annotation says so), an instance is not patched again.
    tasks[3] = instance(b, 3, "Failed", batch_retry=1, retry=1)
    tasks[7] = instance(b, 7, "Submitted", batch_retry=1, retry=1)
    d = run(b, tasks)
    assert patches(d) == {}
    assert d.status["phase"] == "Running"
    assert d.status["failedIndexes"] == "3"


def test_retry_respects_parallelism() -> None:
    b = batch(count=4, retry=1, parallelism=1)
    tasks = [instance(b, i, "Failed") for i in range(4)]
    assert sorted(patches(run(b, tasks))) == [0]


def test_max_failed_instances_stops_dispatch_after_one_too_many() -> None:
    b = batch(count=10, parallelism=3, maxFailedInstances=1)
    tasks = [instance(b, 0, "Failed"), instance(b, 1, "ComputationStarted")]
    assert creates(run(b, tasks)) == [2, 3]  # One failure is allowed.
    tasks = [instance(b, 0, "Failed"), instance(b, 1, "Failed"), instance(b, 2, "Started")]
    d = run(b, tasks)
    assert creates(d) == []
    assert d.status["phase"] == "Running"
    assert d.status["reason"] == "MaxFailedInstancesExceeded"
    tasks[2] = instance(b, 2, "Success")
    d = run(b, tasks)
    assert creates(d) == []
    assert d.status["phase"] == "Failed"
    assert d.status["reason"] == "MaxFailedInstancesExceeded"


def test_kill_kills_every_unfinished_instance_and_creates_none() -> None:
    b = batch(count=10, kill=True)
    tasks = [
        instance(b, 0, "Success"),
        instance(b, 1, "ComputationStarted"),
        instance(b, 2, "Submitted"),
        instance(b, 3, "Failed"),
    ]
    d = run(b, tasks)
    assert creates(d) == []
    assert {i: p["spec"] for i, p in patches(d).items()} == {1: {"kill": True}, 2: {"kill": True}}
    assert d.status["phase"] == "Running" and d.status["reason"] == "Killing"
    tasks[1] = instance(b, 1, "Killed", kill=True)
    tasks[2] = instance(b, 2, "Killed", kill=True)
    d = run(b, tasks)
    assert patches(d) == {} and creates(d) == []
    assert d.status["phase"] == "Killed"
    assert find_condition({"status": d.status}, "Failed")["status"] == "True"  # type: ignore[index]


def test_hold_reaches_unfinished_instances_and_stops_dispatch() -> None:
    b = batch(count=10, hold=True, parallelism=4)
    tasks = [
        instance(b, 0, "ComputationStarted", hold=False),
        instance(b, 1, "Submitted", hold=False),
    ]
    d = run(b, tasks)
    assert creates(d) == []
    assert {i: p["spec"] for i, p in patches(d).items()} == {0: {"hold": True}, 1: {"hold": True}}
    assert d.status["phase"] == "Held"
    b["spec"]["hold"] = False
    tasks = [instance(b, 0, "ComputationStarted", hold=True), instance(b, 1, "Held", hold=True)]
    d = run(b, tasks)
    assert {i: p["spec"] for i, p in patches(d).items()} == {
        0: {"hold": False},
        1: {"hold": False},
    }
    assert creates(d) == [2, 3]


def test_a_name_taken_by_another_owner_is_reported_not_created() -> None:
    d = run(batch(count=3), [], taken=frozenset({1}))
    assert creates(d) == [0, 2]
    stalled = find_condition({"status": d.status}, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert stalled["reason"] == "InstanceNameTaken" and "sweep-1" in stalled["message"]


def test_running_once_an_instance_started() -> None:
    b = batch(count=2)
    d = run(b, [instance(b, 0, "Started"), instance(b, 1, "Submitted")])
    assert d.status["phase"] == "Running"
    assert d.status["running"] == 1
    assert d.status["startTime"] == ts(NOW)


def test_ttl_after_finished() -> None:
    b = batch(count=1, ttlAfterFinished="10m")
    b["status"] = {"phase": "Success", "completionTime": ts(NOW - timedelta(minutes=4))}
    tasks = [instance(b, 0, "Success")]
    d = run(b, tasks)
    assert d.requeue_after == pytest.approx(360)
    assert not any(isinstance(a, DeleteBatch) for a in d.actions)
    d = run(b, tasks, now=NOW + timedelta(minutes=6))
    assert any(isinstance(a, DeleteBatch) for a in d.actions)


def test_a_spec_the_operator_cannot_run_fails_the_batch() -> None:
    d = run(batch(count=2, parameters=[{"A": "1"}]), [])
    assert d.status["phase"] == "Failed" and d.status["reason"] == "InvalidSpec"
    assert d.actions == []


def test_render() -> None:
    env = {"SIMTASK_INDEX": "3", "SIMTASK_PARAM_X": "y"}
    assert render("i$(SIMTASK_INDEX)-$(SIMTASK_PARAM_X)-$(SIMTASK_PARAM_Z)", env) == (
        "i3-y-$(SIMTASK_PARAM_Z)"
    )


def test_merge_diff() -> None:
    old = {"a": 1, "b": {"c": 1, "d": 2}, "e": [1], "gone": 1}
    new = {"a": 1, "b": {"c": 1, "d": 3, "f": 4}, "e": [2]}
    assert merge_diff(old, new) == {"b": {"d": 3, "f": 4}, "e": [2], "gone": None}


def test_instance_names_fit_in_63_characters() -> None:
    assert names.instance_name("sweep", 12) == "sweep-12"
    long = names.instance_name("b" * 70, 99_999)
    assert len(long) == 63 and long.endswith("-99999")
    assert long != names.instance_name("b" * 69 + "c", 99_999)


def test_the_sweep_example() -> None:
    """examples/sweep.yaml: its template is a valid task spec on groups of the same file, one
    parameter item per instance, and its first pass starts `parallelism` instances."""
    from pathlib import Path

    import yaml

    from simtask.api import parse_task_spec

    path = Path(__file__).resolve().parents[2] / "examples" / "sweep.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    groups = {d["metadata"]["name"] for d in docs if d["kind"] == "MachineGroup"}
    (sweep,) = [d for d in docs if d["kind"] == "SimulationBatch"]
    template = parse_task_spec(sweep["spec"]["template"])
    assert {template.machine_group, template.fallback_machine_group} <= groups
    assert len(sweep["spec"]["parameters"]) == sweep["spec"]["count"]
    sweep["metadata"].update(namespace="cfd", uid="u", generation=1)
    d = decide_batch(sweep, Instances({}), NOW)
    assert creates(d) == list(range(sweep["spec"]["parallelism"]))
    first = next(a.task for a in d.actions if isinstance(a, CreateInstance))
    pod_annotations = first["spec"]["podTemplate"]["metadata"]["annotations"]
    assert pod_annotations["example.com/inlet-velocity"] == "2"
