"""decide(): from what the cluster shows of a task to its next status and actions."""

from __future__ import annotations

import copy
from typing import Any

from simtask.decide import (
    CreateJob,
    DeleteJob,
    DeleteTask,
    GroupView,
    KeepLog,
    Observed,
    SuspendJob,
    decide,
)
from simtask.resubmission import resubmit_backoff
from tests.unit import fixtures as f

Obj = dict[str, Any]


def fresh(**spec: Any) -> Obj:
    task = f.task(**spec)
    task["status"] = {}
    return task


def settle(obs: Observed, seconds: float) -> tuple[Obj, Any]:
    """decide() once, then again on its own output: the second pass must change nothing.
    Neither pass may change what it was given (the task is the cache's own object)."""
    given = copy.deepcopy(obs.task)
    first = decide(obs, f.at(seconds))
    assert obs.task == given, "decide changed the task it was given"
    task = {**obs.task, "status": first.status}
    again = decide(Observed(**{**obs.__dict__, "task": task}), f.at(seconds))
    assert again.transitions == [], [t.to_phase for t in again.transitions]
    assert again.status == first.status
    # Actions may repeat (a Job not cached yet is created again and answers AlreadyExists).
    assert {type(a) for a in again.actions} <= {type(a) for a in first.actions}
    return task, first


def phases(decision: Any) -> list[str]:
    return [str(t.to_phase) for t in decision.transitions]


def test_new_task_is_submitted_and_gets_its_job() -> None:
    d = decide(Observed(task=fresh(), missing_inputs=[]), f.at(0))
    assert phases(d) == ["Submitted"]
    assert d.status["attempt"] == 1 and d.status["jobName"] == "cfd-wing-a1"
    (action,) = d.actions
    assert isinstance(action, CreateJob) and action.job["metadata"]["name"] == "cfd-wing-a1"
    assert d.status["conditions"][0] == {
        **d.status["conditions"][0],
        "type": "Ready",
        "status": "False",
    }


def test_waiting_for_the_job_is_a_fixed_point() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    # With the status written and the Job not yet in the cache, nothing more happens.
    again = decide(Observed(task=task, missing_inputs=[]), f.at(1))
    assert again.transitions == [] and again.status == task["status"]


def test_running_pod_walks_started_and_computation_started_with_cluster_times() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    pod = f.pod(phase="Running", state=f.running(3), scheduled=1)
    obs = Observed(
        task=task, jobs={1: f.job(active=1)}, pods={1: [pod]}, nodes={"cpu-standard-1": f.node()}
    )
    task, d = settle(obs, 5)
    assert phases(d) == ["Started", "ComputationStarted"]
    hist = {h["phase"]: h["time"] for h in d.status["history"]}
    assert hist["Started"] == f.ts(1) and hist["ComputationStarted"] == f.ts(3)
    assert (
        d.status["nodeName"] == "cpu-standard-1" and d.status["podName"] == pod["metadata"]["name"]
    )
    assert "duration" not in d.status  # only a finished task has one


def test_succeeded_pod_ends_in_success_with_conditions() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    pod = f.pod(phase="Succeeded", state=f.terminated(0, started=3, finished=63), scheduled=1)
    job = f.job(succeeded=1, conditions=f.job_complete(64), completion=64)
    task, d = settle(
        Observed(task=task, jobs={1: job}, pods={1: [pod]}, nodes={"cpu-standard-1": f.node()}), 70
    )
    assert phases(d) == ["Started", "ComputationStarted", "ComputationEnded", "Success"]
    conds = {c["type"]: c["status"] for c in d.status["conditions"]}
    assert conds == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Succeeded": "True",
        "Failed": "False",
    }
    assert d.status["exitCode"] == 0 and d.status["completionTime"]
    rec = d.status["attempts"][0]
    assert rec["phase"] == "Success" and rec["cpuSeconds"] > 0


def test_kill_deletes_the_job_then_ends_killed() -> None:
    task, _ = settle(Observed(task=fresh(kill=False), missing_inputs=[]), 0)
    pod = f.pod(phase="Running", state=f.running(3))
    obs = Observed(
        task=task, jobs={1: f.job(active=1)}, pods={1: [pod]}, nodes={"cpu-standard-1": f.node()}
    )
    task, _ = settle(obs, 5)
    task["spec"]["kill"] = True
    d = decide(Observed(task=task, jobs={1: f.job(active=1)}, pods={1: [pod]}), f.at(6))
    assert phases(d) == ["PendingKilled"] and d.actions == [DeleteJob("cfd-wing-a1")]
    task["status"] = d.status
    d = decide(Observed(task=task), f.at(8))
    assert phases(d) == ["Killed"]
    assert {c["type"]: c["status"] for c in d.status["conditions"]}["Failed"] == "True"


def test_hold_before_start_creates_nothing_and_release_submits() -> None:
    d = decide(Observed(task=fresh(hold=True), missing_inputs=[]), f.at(0))
    assert phases(d) == ["Held"] and d.actions == []
    task = {**fresh(hold=False), "status": d.status}
    d = decide(Observed(task=task, missing_inputs=[]), f.at(1))
    assert phases(d) == ["Submitted"] and d.status["reason"] == "Released"
    assert isinstance(d.actions[0], CreateJob)


def test_hold_with_an_unbound_job_suspends_it() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    task["spec"]["hold"] = True
    d = decide(
        Observed(task=task, jobs={1: f.job()}, pods={1: [f.pending_pod()]}, missing_inputs=[]),
        f.at(1),
    )
    assert phases(d) == ["Held"] and d.actions == [SuspendJob("cfd-wing-a1", True)]


def test_missing_input_waits_and_polls() -> None:
    d = decide(
        Observed(task=fresh(), missing_inputs=["input 'mesh': ConfigMap 'm' does not exist"]),
        f.at(0),
    )
    assert phases(d) == ["PendingInput"] and d.actions == []
    assert "ConfigMap 'm'" in d.status["message"] and d.requeue_after is not None


def preempted_task(**spec: Any) -> tuple[Obj, Observed]:
    task, _ = settle(Observed(task=fresh(**spec), missing_inputs=[]), 0)
    spot = f.node("cpu-spot-1", pool="cpu-spot", spot=True)
    pod = f.pod(
        node_name="cpu-spot-1",
        phase="Failed",
        state=f.terminated(143, started=3, finished=30),
        extra_conditions=[
            f.disruption_target(
                "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint", when=29
            )
        ],
    )
    job = f.job(failed=1, conditions=f.job_failed(31))
    return task, Observed(
        task=task, jobs={1: job}, pods={1: [pod]}, nodes={"cpu-spot-1": spot}, missing_inputs=[]
    )


def test_spot_preemption_backs_off_then_resubmits_as_attempt_two() -> None:
    _, obs = preempted_task()
    task, d = settle(obs, 31)
    assert phases(d)[-1] == "SpotPreempted"
    assert d.status["nextAttemptTime"] and d.requeue_after is not None
    assert not any(isinstance(a, CreateJob) for a in d.actions)
    # After the backoff: a new attempt with its own Job and the previous phase in its env.
    later = 31 + resubmit_backoff(0).total_seconds() + 5
    d = decide(Observed(**{**obs.__dict__, "task": task}), f.at(later))
    assert phases(d) == ["Submitted"]
    assert d.status["attempt"] == 2 and d.status["resubmissions"] == 1
    (create,) = [a for a in d.actions if isinstance(a, CreateJob)]
    env = {
        e["name"]: e.get("value")
        for e in create.job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (
        env["SIMTASK_ATTEMPT"] == "2" and env["SIMTASK_PREVIOUS_ATTEMPT_PHASE"] == "SpotPreempted"
    )
    assert d.status["attempts"][0]["phase"] == "SpotPreempted"


def test_no_resubmission_budget_makes_preemption_terminal() -> None:
    _, obs = preempted_task(maxResubmissions=0)
    _, d = settle(obs, 31)
    assert d.status["phase"] == "SpotPreempted" and d.requeue_after is None
    assert {c["type"]: c["status"] for c in d.status["conditions"]}["Failed"] == "True"
    assert "maxResubmissions" in d.status["message"]


def test_retry_after_failure_starts_a_new_attempt() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    pod = f.pod(phase="Failed", state=f.terminated(3, started=3, finished=9))
    obs = Observed(
        task=task,
        jobs={1: f.job(failed=1, conditions=f.job_failed(10))},
        pods={1: [pod]},
        missing_inputs=[],
    )
    task, d = settle(obs, 11)
    assert d.status["phase"] == "Failed" and d.status["exitCode"] == 3
    task["spec"]["retry"] = 1
    d = decide(Observed(**{**obs.__dict__, "task": task}), f.at(20))
    assert phases(d) == ["Submitted"] and d.status["attempt"] == 2
    assert "exitCode" not in d.status
    assert [a.job["metadata"]["name"] for a in d.actions if isinstance(a, CreateJob)] == [
        "cfd-wing-a2"
    ]


def test_ttl_after_finished_deletes_the_task_when_due() -> None:
    task, _ = settle(Observed(task=fresh(ttlAfterFinished="30s"), missing_inputs=[]), 0)
    task["spec"]["kill"] = True
    d = decide(Observed(task=task), f.at(1))
    task["status"] = d.status
    assert d.status["phase"] == "Killed" and d.requeue_after == 30
    assert DeleteTask() in decide(Observed(task=task), f.at(40)).actions


def test_group_terminated_before_start_is_zombie() -> None:
    view = GroupView(name="cpu-spot", obj=f.machine_group(), state="Terminated")
    _, d = settle(Observed(task=fresh(machineGroup="cpu-spot"), missing_inputs=[], group=view), 0)
    assert phases(d) == ["Submitted", "Zombie"] and "cpu-spot" in d.status["message"]
    assert d.actions == []


def test_group_not_created_yet_waits() -> None:
    view = GroupView(name="cpu-spot", obj=None, state="Missing")
    _, d = settle(Observed(task=fresh(machineGroup="cpu-spot"), missing_inputs=[], group=view), 0)
    assert phases(d) == ["Submitted"] and d.actions == []
    assert d.status["reason"] == "MachineGroupMissing"


def test_quota_full_queues_with_position_and_no_job() -> None:
    view = GroupView(
        name="cpu-spot", obj=f.machine_group(), state="Active", admits=False, queue_position=2
    )
    d = decide(
        Observed(task=fresh(machineGroup="cpu-spot"), missing_inputs=[], group=view), f.at(0)
    )
    assert phases(d) == ["Submitted"] and d.actions == []
    assert d.status["queuePosition"] == 2 and "position 2" in d.status["message"]


def test_a_deleted_spot_node_is_still_spot() -> None:
    """The cloud deletes a reclaimed spot node: the attempt remembers it was spot."""
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    spot = f.node("cpu-spot-1", pool="cpu-spot", spot=True)
    running = f.pod(node_name="cpu-spot-1", phase="Running", state=f.running(3))
    seen = Observed(
        task=task, jobs={1: f.job(active=1)}, pods={1: [running]}, nodes={"cpu-spot-1": spot}
    )
    task, d = settle(seen, 5)
    assert d.status["attempts"][0]["spot"] is True
    # The node object is gone, and so are the Job's pod and the Job itself.
    d = decide(Observed(task=task, missing_inputs=[]), f.at(90))
    assert phases(d) == ["SpotPreempted"], d.status.get("message")


def test_a_job_the_api_server_refuses_fails_the_task() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    d = decide(
        Observed(task=task, missing_inputs=[], job_rejected='spec.template: Invalid value: "x"'),
        f.at(1),
    )
    assert phases(d) == ["Failed"] and d.status["reason"] == "JobRejected"
    assert "Invalid value" in d.status["message"] and d.actions == []


def test_examples_pass_the_api_models_and_a_bad_spec_fails_clearly() -> None:
    import pathlib

    import yaml

    from simtask.reconciler import spec_error

    root = pathlib.Path(__file__).resolve().parents[2] / "examples"
    tasks = [
        d
        for p in root.glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text())
        if d and d.get("kind") == "SimulationTask"
    ]
    assert len(tasks) >= 5
    for task in tasks:
        assert spec_error(task) is None, task["metadata"]["name"]
    assert spec_error({"spec": {"image": "x", "resources": {"gpu": -1}}}).startswith(
        "spec.resources.gpu"
    )


def test_an_invalid_spec_fails_before_any_job() -> None:
    d = decide(
        Observed(task=fresh(), missing_inputs=[], spec_error="spec.resources.gpu: too small"),
        f.at(0),
    )
    assert phases(d) == ["Submitted", "Failed"]
    assert d.status["reason"] == "InvalidSpec" and d.actions == []


def test_task_created_with_kill_is_killed_at_once() -> None:
    d = decide(Observed(task=fresh(kill=True), missing_inputs=[]), f.at(0))
    assert phases(d) == ["PendingKilled", "Killed"]
    assert d.actions == [] and d.refused == []
    assert {c["type"]: c["status"] for c in d.status["conditions"]}["Failed"] == "True"


def test_resubmission_waits_until_the_old_pod_is_gone() -> None:
    _, obs = preempted_task()
    task, _ = settle(obs, 31)
    later = 31 + resubmit_backoff(0).total_seconds() + 5
    # The lost attempt's pod is still terminating on a live node (its grace period).
    terminating = f.pod(node_name="cpu-spot-1", phase="Running", state=f.running(3), deleted=29)
    waiting = Observed(**{**obs.__dict__, "task": task, "pods": {1: [terminating]}})
    d = decide(waiting, f.at(later))
    assert phases(d) == [] and not any(isinstance(a, CreateJob) for a in d.actions)
    assert (
        "has stopped" in d.status["message"]
        and terminating["metadata"]["name"] in (d.status["message"])
    )
    # Gone: attempt 2 starts.
    d = decide(Observed(**{**obs.__dict__, "task": task, "pods": {}}), f.at(later))
    assert phases(d) == ["Submitted"] and d.status["attempt"] == 2


def test_a_failed_pod_kept_by_its_job_does_not_hold_the_resubmission_back() -> None:
    _, obs = preempted_task()
    task, _ = settle(obs, 31)
    later = 31 + resubmit_backoff(0).total_seconds() + 5
    d = decide(Observed(**{**obs.__dict__, "task": task}), f.at(later))
    assert phases(d) == ["Submitted"]


def test_running_pod_on_a_deleted_node_is_preempted_at_once() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    pod = f.pod(node_name="cpu-spot-2", phase="Running", state=f.running(3))
    running = Observed(
        task=task,
        jobs={1: f.job(active=1)},
        pods={1: [pod]},
        nodes={"cpu-spot-2": f.node("cpu-spot-2", pool="cpu-spot", spot=True)},
        missing_inputs=[],
    )
    task, d = settle(running, 5)
    assert d.status["phase"] == "ComputationStarted"
    # The node is deleted; the API still shows the pod Running until pod GC comes.
    gone = Observed(**{**running.__dict__, "task": task, "nodes": {}})
    d = decide(gone, f.at(10))
    assert d.status["phase"] == "ComputationStarted", "an unknown node alone proves nothing"
    d = decide(Observed(**{**gone.__dict__, "gone_nodes": frozenset({"cpu-spot-2"})}), f.at(10))
    assert phases(d) == ["SpotPreempted"]
    assert "cpu-spot-2 was deleted" in d.status["message"]
    # Its pod will never stop there: attempt 2 does not wait for it.
    task = {**task, "status": d.status}
    later = 10 + resubmit_backoff(0).total_seconds() + 1
    d = decide(
        Observed(**{**gone.__dict__, "task": task, "gone_nodes": frozenset({"cpu-spot-2"})}),
        f.at(later),
    )
    assert phases(d) == ["Submitted"] and d.status["attempt"] == 2


def test_an_error_that_persists_shows_as_stalled_until_it_clears() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    stalled = ("JobCreateFailed", 'creating Job cfd-wing-a1: exceeded quota: "count/jobs.batch"')
    d = decide(Observed(task=task, missing_inputs=[], stalled=stalled), f.at(3))
    assert d.status["phase"] == "Submitted" and d.status["reason"] == "JobCreateFailed"
    cond = {c["type"]: c for c in d.status["conditions"]}["Stalled"]
    assert cond["status"] == "True" and cond["reason"] == "JobCreateFailed"
    assert "exceeded quota" in cond["message"]
    d = decide(Observed(task={**task, "status": d.status}, missing_inputs=[]), f.at(4))
    assert {c["type"]: c for c in d.status["conditions"]}["Stalled"]["status"] == "False"
    assert d.status["reason"] != "JobCreateFailed"


def test_a_job_that_cannot_create_its_pod_says_why() -> None:
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    why = 'pods "cfd-wing-a1-x" is forbidden: no PriorityClass with name urgent was found'
    d = decide(
        Observed(task=task, jobs={1: f.job()}, missing_inputs=[], pod_creation_error=why),
        f.at(2),
    )
    assert d.status["phase"] == "Submitted" and d.status["reason"] == "PodCreationFailed"
    assert "no PriorityClass with name urgent" in d.status["message"]


def test_a_task_killed_while_waiting_shows_no_position_nor_next_attempt() -> None:
    _, obs = preempted_task()
    task, d = settle(obs, 31)
    assert d.status["nextAttemptTime"]
    killed = {**task, "spec": {**task["spec"], "kill": True}}
    d = decide(Observed(**{**obs.__dict__, "task": killed, "jobs": {}, "pods": {}}), f.at(32))
    assert d.status["phase"] == "Killed"
    assert "nextAttemptTime" not in d.status and "queuePosition" not in d.status
    queued = fresh(machineGroup="cpu-spot")
    queued["status"] = {"phase": "Submitted", "attempt": 1, "queuePosition": 4}
    queued["spec"]["kill"] = True
    d = decide(Observed(task=queued, missing_inputs=[]), f.at(1))
    assert d.status["phase"] == "Killed" and "queuePosition" not in d.status


def test_a_secret_the_kubelet_cannot_mount_is_shown_on_the_started_task() -> None:
    """Without read access to Secrets the operator learns of a missing Secret input from the
    kubelet: the task stays Started (its pod is bound) and says which input is missing."""
    task, _ = settle(Observed(task=fresh(), missing_inputs=[]), 0)
    pod = f.pod(phase="Pending", state=f.waiting("ContainerCreating"), scheduled=1)
    why = "input 'creds': Secret 'solver-key' does not exist in namespace 'ns'"
    obs = Observed(
        task=task,
        jobs={1: f.job(active=1)},
        pods={1: [pod]},
        nodes={"cpu-standard-1": f.node()},
        mount_errors=[why],
    )
    task, d = settle(obs, 5)
    assert d.status["phase"] == "Started"
    assert d.status["reason"] == "InputMissing" and d.status["message"] == why
    # Mounted at last: the simulator runs, and the reason is the run's own.
    running = f.pod(phase="Running", state=f.running(9), scheduled=1)
    obs = Observed(task=task, jobs={1: f.job(active=1)}, pods={1: [running]}, nodes=obs.nodes)
    _, d = settle(obs, 10)
    assert d.status["phase"] == "ComputationStarted" and d.status.get("reason") != "InputMissing"


def _ended(exit_code: int, *, message: str | None = None, **spec: Any) -> tuple[Obj, Any]:
    """A task whose first attempt's pod ended with `exit_code`, decided until it settles."""
    task, _ = settle(Observed(task=fresh(**spec), missing_inputs=[]), 0)
    state = f.terminated(exit_code, started=3, finished=9, message=message)
    if exit_code == 0:
        pod = f.pod(phase="Succeeded", state=state, scheduled=1)
        job = f.job(succeeded=1, conditions=f.job_complete(10), completion=10)
    else:
        pod = f.pod(phase="Failed", state=state, scheduled=1)
        job = f.job(failed=1, conditions=f.job_failed(10))
    obs = Observed(task=task, jobs={1: job}, pods={1: [pod]}, nodes={"cpu-standard-1": f.node()})
    return settle(obs, 11)


def test_a_failed_attempt_keeps_its_log_once_and_shows_the_tail_in_its_record() -> None:
    tail = "reading mesh\nFATAL: solver diverged at t=0.42"
    task, d = _ended(3, message=tail)
    pod_name = d.status["podName"]
    assert [a for a in d.actions if isinstance(a, KeepLog)] == [KeepLog(1, "cfd-wing-a1", pod_name)]
    (rec,) = d.status["attempts"]
    assert rec["phase"] == "Failed" and rec["reason"] == "NonZeroExit"
    assert rec["message"] == d.status["message"]
    assert rec["message"].endswith("FATAL: solver diverged at t=0.42")
    # Once: the passes after it (the settle above ran one) keep nothing more.
    again = decide(Observed(task=task), f.at(30))
    assert not [a for a in again.actions if isinstance(a, KeepLog)]


def test_keep_logs_decides_which_endings_keep_their_log() -> None:
    def kept(exit_code: int, **spec: Any) -> bool:
        _, d = _ended(exit_code, **spec)
        return any(isinstance(a, KeepLog) for a in d.actions)

    assert kept(0) is False and kept(3) is True  # OnFailure, the default
    assert kept(0, keepLogs="Always") is True and kept(3, keepLogs="Always") is True
    assert kept(0, keepLogs="Never") is False and kept(3, keepLogs="Never") is False
    assert kept(0, keepLogs="OnFailure") is False and kept(3, keepLogs="OnFailure") is True
