"""Decide: from what the cluster shows of a SimulationTask, its next status and actions.

Pure: no I/O, no clock (`now` is an argument). The reconciler gathers an `Observed`, calls
`decide`, performs the `Decision`'s actions, writes its status once and emits its events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from simtask import builders, keptlogs, preemption
from simtask.conditions import condition_true, task_conditions
from simtask.durations import format_duration, parse_duration
from simtask.lifecycle import (
    NOT_STARTED,
    PREEMPTED,
    RUNNING,
    Phase,
    can_transition,
    is_terminal,
    parse_phase,
)
from simtask.podstate import compute_seconds, observe_attempt, vanished_attempt
from simtask.preemption import node_ready
from simtask.resubmission import resubmission_allowed, resubmit_backoff
from simtask.timestamps import parse_ts, ts

Obj = Mapping[str, Any]

#: How often a task waiting for its inputs looks again.
INPUT_POLL = timedelta(seconds=3)


# ---------------------------------------------------------------- what goes in


@dataclass(frozen=True)
class GroupView:
    """What the task needs to know of a MachineGroup."""

    name: str
    obj: Obj | None
    #: Active, Terminated, Expired, or Missing (the object does not exist).
    state: str
    #: The group may start one more task now (quota).
    admits: bool = True
    #: 1 = next to start, when the quota holds the task back.
    queue_position: int | None = None
    #: Why the task cannot be placed even with the quota free (e.g. too many GPUs).
    unplaceable: str | None = None


@dataclass(frozen=True)
class Observed:
    """Everything the cluster shows of one task, gathered by the reconciler from its caches."""

    task: Obj
    #: The task's Jobs by attempt number.
    jobs: Mapping[int, Obj] = field(default_factory=dict)
    #: The task's pods by attempt number.
    pods: Mapping[int, Sequence[Obj]] = field(default_factory=dict)
    #: Nodes by name (at least those the task's pods are bound to, when they still exist).
    nodes: Mapping[str, Obj] = field(default_factory=dict)
    #: Messages for inputs that do not exist yet; None when inputs were not looked up.
    missing_inputs: Sequence[str] | None = None
    #: The MachineGroup this attempt is placed on, when the task names one.
    group: GroupView | None = None
    #: Why the API server refused this attempt's Job, when it did.
    job_rejected: str | None = None
    #: Why the spec is invalid, when the API models reject what the CRD let through.
    spec_error: str | None = None
    #: Nodes known to be deleted (not merely unknown): their pods will never report again.
    gone_nodes: frozenset[str] = frozenset()
    #: (reason, message) of an action that keeps failing (a Job the API server refuses to
    #: create for now, a name taken by another owner, ...): shown until it succeeds.
    stalled: tuple[str, str] | None = None
    #: Why the Job controller cannot create the current attempt's pod (its FailedCreate
    #: event: a ResourceQuota, an unknown PriorityClass, an admission webhook), if it cannot.
    pod_creation_error: str | None = None
    #: Inputs the kubelet cannot mount for the current attempt's pod (its FailedMount
    #: events), when the operator leaves Secret inputs to the kubelet.
    mount_errors: Sequence[str] = ()


# ---------------------------------------------------------------- what comes out


@dataclass(frozen=True)
class CreateJob:
    """Create this Job (AlreadyExists is success: the name is deterministic)."""

    job: dict[str, Any]


@dataclass(frozen=True)
class DeleteJob:
    """Delete this Job and, in the background, its pods."""

    name: str


@dataclass(frozen=True)
class SuspendJob:
    """Set spec.suspend on this Job."""

    name: str
    suspend: bool


@dataclass(frozen=True)
class DeleteTask:
    """Delete the task itself (spec.ttlAfterFinished ran out)."""


@dataclass(frozen=True)
class KeepLog:
    """Keep the log of attempt `attempt`, which just ended, from its pod (SPEC §7)."""

    attempt: int
    job_name: str
    pod_name: str


Action = CreateJob | DeleteJob | SuspendJob | DeleteTask | KeepLog


@dataclass(frozen=True)
class Transition:
    """One move of status.phase, as written to status.history."""

    from_phase: Phase | None
    to_phase: Phase
    reason: str
    message: str
    time: datetime
    attempt: int


@dataclass
class Decision:
    """The new status, the moves that led there, and what to do."""

    status: dict[str, Any]
    transitions: list[Transition] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    #: Look again after this long even if nothing changes (backoff, polling, TTLs).
    requeue_after: float | None = None
    #: Moves the table refused (a bug or a race): logged, never applied.
    refused: list[str] = field(default_factory=list)

    def wake(self, after: timedelta) -> None:
        seconds = max(after.total_seconds(), 0.05)
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


# ---------------------------------------------------------------- helpers


def is_spot(group: GroupView | None, node: Obj | None, remembered: bool | None = None) -> bool:
    """A group's explicit `spec.spot` wins; otherwise the node's cloud labels tell. When the
    node is gone (deleted by the cloud), what the attempt recorded of it, else what the
    group detected of its nodes."""
    if group is not None and group.obj is not None:
        explicit = (group.obj.get("spec") or {}).get("spot")
        if explicit is not None:
            return bool(explicit)
    if node is not None:
        return preemption.is_spot_node((node.get("metadata") or {}).get("labels") or {})
    if remembered is not None:
        return remembered
    if group is not None and group.obj is not None:
        return bool((group.obj.get("status") or {}).get("spot"))
    return False


class _Pass:
    """State of one decide() pass: the status being built and the moves made."""

    def __init__(self, obs: Observed, now: datetime) -> None:
        self.obs = obs
        self.now = now
        self.task = obs.task
        self.spec: Mapping[str, Any] = obs.task.get("spec") or {}
        self.old_status: Mapping[str, Any] = obs.task.get("status") or {}
        # A copy of the lists and the top level is enough: entries are replaced, never
        # changed in place, so the task in the cache is never touched.
        self.status: dict[str, Any] = dict(self.old_status)
        self.status["history"] = list(self.old_status.get("history") or [])
        self.status["attempts"] = list(self.old_status.get("attempts") or [])
        self.phase = parse_phase(self.status.get("phase"))
        self.attempt = int(self.status.get("attempt") or 0)
        self.decision = Decision(status=self.status)

    # -- moves

    def move(self, to: Phase, reason: str, message: str, at: datetime | None = None) -> bool:
        if self.phase == to:
            self.status["reason"], self.status["message"] = reason, message
            return True
        if not can_transition(self.phase, to):
            self.decision.refused.append(f"{self.phase} -> {to} ({reason})")
            return False
        when = at or self.now
        self.decision.transitions.append(
            Transition(self.phase, to, reason, message, when, max(self.attempt, 1))
        )
        self.status["history"].append(
            {
                "phase": str(to),
                "time": ts(when),
                "reason": reason,
                "message": message,
                "attempt": max(self.attempt, 1),
            }
        )
        self.phase = to
        self.status["phase"] = str(to)
        self.status["reason"], self.status["message"] = reason, message
        return True

    def seen_this_attempt(self, phase: Phase) -> bool:
        return any(
            h.get("phase") == phase and int(h.get("attempt") or 0) == self.attempt
            for h in self.status["history"]
        )

    # -- attempts

    def job(self) -> Obj | None:
        return self.obs.jobs.get(self.attempt)

    def pods(self) -> Sequence[Obj]:
        return self.obs.pods.get(self.attempt, ())

    def attempt_record(self) -> dict[str, Any]:
        for rec in self.status["attempts"]:
            if int(rec.get("attempt") or 0) == self.attempt:
                return dict(rec)
        return {}

    def put_attempt_record(self, rec: dict[str, Any]) -> None:
        rest = [r for r in self.status["attempts"] if int(r.get("attempt") or 0) != self.attempt]
        self.status["attempts"] = sorted([*rest, rec], key=lambda r: int(r.get("attempt") or 0))

    def previous_attempt_phase(self) -> str | None:
        for rec in reversed(self.status["attempts"]):
            if int(rec.get("attempt") or 0) < self.attempt and rec.get("phase"):
                return str(rec["phase"])
        return None

    def new_attempt(self, reason: str, message: str) -> None:
        self.attempt += 1
        self.status["attempt"] = self.attempt
        for key in ("jobName", "podName", "nodeName", "exitCode", "startTime", "completionTime"):
            self.status.pop(key, None)
        self.status.pop("nextAttemptTime", None)
        self.move(Phase.SUBMITTED, reason, message)


# ---------------------------------------------------------------- decide


def decide(obs: Observed, now: datetime) -> Decision:
    """The next status of a task and the actions that bring the cluster there."""
    p = _Pass(obs, now)
    spec = p.spec

    if p.phase is None:
        p.attempt = 1
        p.status["attempt"] = 1
        p.status.setdefault("resubmissions", 0)
        p.status.setdefault("retry", int(spec.get("retry") or 0))

    if spec.get("kill") and not _terminal(p):
        _kill(p)
        _ttl_after_finished(p)
    else:
        _retry(p)
        if p.phase is None or p.phase in NOT_STARTED:
            _before_start(p)
        if p.phase in RUNNING or (p.phase == Phase.SUBMITTED and (p.job() or p.pods())):
            _follow_attempt(p)
        if p.phase in RUNNING:
            _group_gone_while_running(p)
        if p.phase in PREEMPTED:
            _after_preemption(p)
        _ttl_after_finished(p)

    _finish_status(p)
    return p.decision


def _terminal(p: _Pass) -> bool:
    follows = resubmission_allowed(p.spec, int(p.status.get("resubmissions") or 0))
    return is_terminal(p.phase, resubmission_follows=follows)


def _kill(p: _Pass) -> None:
    p.move(Phase.PENDING_KILLED, "KillRequested", "spec.kill is true: stopping the task")
    job, pods = p.job(), p.pods()
    if job is not None and not (job.get("metadata") or {}).get("deletionTimestamp"):
        p.decision.actions.append(DeleteJob(str(job["metadata"]["name"])))
    if job is None and not pods:
        p.move(Phase.KILLED, "Killed", "killed by the user (spec.kill)")
        _close_attempt(p, Phase.KILLED, p.now)


def _retry(p: _Pass) -> None:
    wanted = int(p.spec.get("retry") or 0)
    done = int(p.status.get("retry") or 0)
    if wanted <= done:
        return
    p.status["retry"] = wanted
    if p.phase is not None and _terminal(p) and p.phase != Phase.SUCCESS:
        p.new_attempt(
            "RetryRequested", f"spec.retry raised to {wanted}: running attempt {p.attempt + 1}"
        )


def _before_start(p: _Pass) -> None:
    """PendingInput, Held, Submitted: wait for inputs, the user, the group; then start."""
    spec, obs = p.spec, p.obs
    group = obs.group
    if group is not None and group.state == "Missing":
        # Not created yet, perhaps: GitOps tools apply in no particular order.
        p.move(
            Phase.SUBMITTED,
            "MachineGroupMissing",
            f"MachineGroup {group.name!r} does not exist; the task waits for it",
        )
        return
    if group is not None and group.state != "Active":
        what = {"Deleted": "was deleted", "Terminated": "was terminated", "Expired": "expired"}
        if p.phase is None:
            p.move(Phase.SUBMITTED, "Submitted", f"placed on MachineGroup {group.name!r}")
        p.move(
            Phase.ZOMBIE,
            "MachineGroup" + group.state,
            f"MachineGroup {group.name!r} {what[group.state]} before the task started",
        )
        _cleanup_jobs(p)
        return
    if obs.missing_inputs:
        p.move(Phase.PENDING_INPUT, "InputMissing", "; ".join(obs.missing_inputs))
        p.decision.wake(INPUT_POLL)
        return
    job = p.job()
    if spec.get("hold"):
        bound = any((pod.get("spec") or {}).get("nodeName") for pod in p.pods())
        if not bound:
            p.move(
                Phase.HELD, "HeldByUser", "spec.hold is true: the task waits until it is released"
            )
            if job is not None and not (job.get("spec") or {}).get("suspend"):
                p.decision.actions.append(SuspendJob(str(job["metadata"]["name"]), True))
            return
    # Released, or never held.
    reason, message = "Submitted", "waiting for a node"
    if p.phase == Phase.HELD:
        reason, message = "Released", "spec.hold is false: the task is queued again"
    if group is not None and group.unplaceable:
        reason, message = "Unplaceable", group.unplaceable
    p.move(Phase.SUBMITTED, reason, message)
    if p.phase != Phase.SUBMITTED or (group is not None and group.unplaceable and job is None):
        return  # A task that can never fit gets no Job and holds no slot.
    if job is not None:
        if (job.get("spec") or {}).get("suspend"):
            p.decision.actions.append(SuspendJob(str(job["metadata"]["name"]), False))
        p.status["jobName"] = job["metadata"]["name"]
        p.status.pop("queuePosition", None)
        return
    if group is not None and not group.admits:
        p.status["queuePosition"] = group.queue_position
        p.status["reason"] = "Queued"
        p.status["message"] = (
            f"MachineGroup {group.name!r} is running its maximum of concurrent tasks; "
            f"position {group.queue_position} in its queue"
        )
        return
    p.status.pop("queuePosition", None)
    if obs.job_rejected:
        p.move(Phase.FAILED, "JobRejected", f"the API server refused the Job: {obs.job_rejected}")
        return
    if obs.spec_error:
        p.move(Phase.FAILED, "InvalidSpec", f"spec is invalid: {obs.spec_error}")
        return
    manifest = builders.build_job(
        dict(p.task),
        p.attempt,
        group=dict(group.obj) if group is not None and group.obj is not None else None,
        previous_attempt_phase=p.previous_attempt_phase(),
    )
    p.status["jobName"] = manifest["metadata"]["name"]
    p.decision.actions.append(CreateJob(manifest))
    rec = p.attempt_record() or {"attempt": p.attempt}
    rec["jobName"] = manifest["metadata"]["name"]
    if group is not None:
        p.status["machineGroup"] = rec["machineGroup"] = group.name
    else:
        p.status.pop("machineGroup", None)
    p.put_attempt_record(rec)


def _follow_attempt(p: _Pass) -> None:
    """Started onwards: walk the steps the attempt's Job and pod show."""
    job, pods = p.job(), p.pods()
    node_name = next(
        (str(pod["spec"]["nodeName"]) for pod in pods if (pod.get("spec") or {}).get("nodeName")),
        p.status.get("nodeName"),
    )
    node = p.obs.nodes.get(node_name) if node_name else None
    remembered = p.attempt_record().get("spot")
    spot = is_spot(p.obs.group, node, None if remembered is None else bool(remembered))
    if job is None and not pods:
        if p.phase == Phase.SUBMITTED:
            return  # The Job is being created (or the cache has not seen it yet).
        view = vanished_attempt(
            node,
            node_name,
            spot=spot,
            job_name=p.status.get("jobName"),
            pod_name=p.status.get("podName"),
            now=p.now,
        )
    else:
        view = observe_attempt(
            job,
            list(pods),
            node,
            spot=spot,
            node_name=node_name,
            node_gone=bool(node_name) and node_name in p.obs.gone_nodes,
        )

    if view.unschedulable_message and p.phase == Phase.SUBMITTED:
        p.status["reason"], p.status["message"] = "Unschedulable", view.unschedulable_message
    if p.obs.pod_creation_error and p.phase == Phase.SUBMITTED and job is not None and not pods:
        p.status["reason"] = "PodCreationFailed"
        p.status["message"] = f"the Job cannot create the pod: {p.obs.pod_creation_error}"
    executor = {
        key: value
        for key, value in (
            ("jobName", view.job_name),
            ("podName", view.pod_name),
            ("nodeName", view.node_name),
        )
        if value
    }
    p.status.update(executor)
    if view.exit_code is not None:
        p.status["exitCode"] = view.exit_code
    if view.start_time and not p.status.get("startTime"):
        p.status["startTime"] = ts(view.start_time)

    for step in view.steps:
        if p.seen_this_attempt(step.phase) and step.phase != p.phase:
            continue
        if not p.move(step.phase, step.reason, step.message, step.time):
            break

    if p.obs.mount_errors and p.phase == Phase.STARTED:
        p.status["reason"], p.status["message"] = "InputMissing", "; ".join(p.obs.mount_errors)

    rec = p.attempt_record() or {"attempt": p.attempt}
    rec.update(executor)
    if p.obs.group is not None:
        rec["machineGroup"] = p.obs.group.name
    if view.start_time:
        rec.setdefault("startTime", ts(view.start_time))
    if node is not None or p.obs.group is not None:
        rec["spot"] = spot
    p.put_attempt_record(rec)

    if (
        view.delete_job
        and job is not None
        and not (job.get("metadata") or {}).get("deletionTimestamp")
    ):
        p.decision.actions.append(DeleteJob(str(job["metadata"]["name"])))
    if view.ended and p.phase is not None and p.phase not in RUNNING:
        _close_attempt(p, p.phase, view.end_time or p.now)


def _group_gone_while_running(p: _Pass) -> None:
    """The task's MachineGroup was terminated, expired or deleted under it: stop it."""
    group = p.obs.group
    if group is None or group.state in ("Active", "Missing"):
        return
    if group.state == "Expired":
        phase, reason = Phase.EXECUTOR_TERMINATED_TTL_EXCEEDED, "MachineGroupExpired"
        message = f"MachineGroup {group.name!r} reached its timeToLive while the task ran"
    else:
        phase, reason = Phase.EXECUTOR_TERMINATED_BY_USER, "MachineGroup" + group.state
        verb = "was deleted" if group.state == "Deleted" else "was terminated"
        message = f"MachineGroup {group.name!r} {verb} by the user while the task ran"
    if p.move(phase, reason, message):
        _close_attempt(p, phase, p.now)
        _cleanup_jobs(p)


def _close_attempt(p: _Pass, phase: Phase, end: datetime) -> None:
    rec = p.attempt_record() or {"attempt": p.attempt}
    if rec.get("phase") == phase and rec.get("endTime"):
        return
    rec["phase"] = str(phase)
    rec["endTime"] = ts(end)
    # How it ended, as the task showed it then (a failed simulator's last lines included).
    for key in ("reason", "message"):
        if p.status.get(key):
            rec[key] = p.status[key]
    # Compute is counted between the times on record (to the second), so they agree.
    end = parse_ts(rec["endTime"]) or end
    start = parse_ts(rec.get("startTime"))
    cpu, gpu = 0.0, 0.0
    if start is not None:
        cpu, gpu = compute_seconds(p.obs.jobs.get(p.attempt), start, end)
    rec["cpuSeconds"] = round(cpu, 3)
    rec["gpuSeconds"] = round(gpu, 3)
    p.put_attempt_record(rec)
    job_name, pod_name = rec.get("jobName"), rec.get("podName")
    if job_name and pod_name and keptlogs.should_keep(p.spec.get("keepLogs"), phase):
        p.decision.actions.append(KeepLog(p.attempt, str(job_name), str(pod_name)))


def _after_preemption(p: _Pass) -> None:
    """SpotPreempted / ExecutorTerminated: resubmit after a backoff, or end here."""
    resubmissions = int(p.status.get("resubmissions") or 0)
    if not resubmission_allowed(p.spec, resubmissions):
        why = (
            "resubmitOnPreemption is false"
            if not p.spec.get("resubmitOnPreemption", True)
            else f"maxResubmissions {p.spec.get('maxResubmissions', 3)} reached"
        )
        # From the history entry, not the current message, so a second pass adds nothing.
        p.status["message"] = f"{_last_entry(p).get('message', p.phase)} ({why}; no resubmission)"
        _cleanup_jobs(p)
        return
    rec = p.attempt_record()
    ended = parse_ts(rec.get("endTime")) or p.now
    at = ended + resubmit_backoff(resubmissions)
    p.status["nextAttemptTime"] = ts(at)
    if p.now < at:
        p.decision.wake(at - p.now)
        return
    stopping = _still_running(p)
    if stopping:
        p.status["message"] = (
            f"{_last_entry(p).get('message', p.phase)}; attempt {p.attempt + 1} starts once "
            f"pod {stopping} of attempt {p.attempt} has stopped"
        )
        return  # Its pod's events wake the task.
    lost = p.phase
    p.status["resubmissions"] = resubmissions + 1
    p.new_attempt(
        "Resubmitted",
        f"attempt {p.attempt} lost ({lost}); resubmitted as attempt {p.attempt + 1} "
        f"({resubmissions + 1} of {p.spec.get('maxResubmissions', 3)})",
    )
    _before_start(p)


def _last_entry(p: _Pass) -> dict[str, Any]:
    """The history entry of the move into the current phase."""
    history: list[dict[str, Any]] = p.status["history"]
    return next((h for h in reversed(history) if h.get("phase") == p.phase), {})


def _still_running(p: _Pass) -> str | None:
    """A pod of an earlier attempt that may still be running (terminating during its grace
    period, say, and writing to /outputs): the next attempt waits until it is gone. Pods of
    a node that is gone or down will never stop by themselves and do not count."""
    for attempt, pods in p.obs.pods.items():
        if attempt > p.attempt:
            continue
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = p.obs.nodes.get(node_name) if node_name else None
            if node is None or node_name in p.obs.gone_nodes or not node_ready(node):
                continue
            phase = (pod.get("status") or {}).get("phase")
            deleting = (pod.get("metadata") or {}).get("deletionTimestamp")
            if deleting or phase not in ("Succeeded", "Failed"):
                return str(pod["metadata"]["name"])
    return None


def job_finished(job: Obj) -> bool:
    """Whether the Job controller has marked the Job Complete or Failed."""
    return condition_true(job, "Complete", "Failed") is not None


def _cleanup_jobs(p: _Pass) -> None:
    """Delete every Job of the task that could still run a pod."""
    for job in p.obs.jobs.values():
        meta = job.get("metadata") or {}
        if not meta.get("deletionTimestamp") and not job_finished(job):
            p.decision.actions.append(DeleteJob(str(meta["name"])))


def _ttl_after_finished(p: _Pass) -> None:
    ttl = p.spec.get("ttlAfterFinished")
    if not ttl or not _terminal(p):
        return
    done = parse_ts(p.status.get("completionTime")) or p.now
    at = done + parse_duration(str(ttl))
    if p.now >= at:
        p.decision.actions.append(DeleteTask())
    else:
        p.decision.wake(at - p.now)


# ---------------------------------------------------------------- conditions


def _finish_status(p: _Pass) -> None:
    status = p.status
    terminal = _terminal(p)
    phase = p.phase
    if terminal and not status.get("completionTime"):
        last = status["history"][-1]["time"] if status["history"] else ts(p.now)
        status["completionTime"] = last
    if not terminal:
        status.pop("completionTime", None)
    # Only a finished task has a duration: a running one would change its status on every
    # pass, and every write is a watch event that starts another pass.
    start, end = parse_ts(status.get("startTime")), parse_ts(status.get("completionTime"))
    if start is not None and end is not None:
        status["duration"] = format_duration(
            timedelta(seconds=round((end - start).total_seconds()))
        )
    else:
        status.pop("duration", None)
    generation = int((p.task.get("metadata") or {}).get("generation") or 0)
    status["observedGeneration"] = generation
    # A queue position only while waiting for a slot, a next attempt's time only while
    # waiting for it: a task killed in either wait shows neither.
    if terminal or phase not in (None, Phase.SUBMITTED):
        status.pop("queuePosition", None)
    if terminal or phase not in PREEMPTED:
        status.pop("nextAttemptTime", None)

    stalled = p.obs.stalled if not terminal else None
    if stalled is not None:
        status["reason"], status["message"] = stalled
    status["conditions"] = task_conditions(
        p.old_status.get("conditions") or [],
        phase,
        terminal=terminal,
        message=str(status.get("message") or ""),
        generation=generation,
        now=p.now,
        stalled=stalled,
    )
    for key in [k for k, v in status.items() if v is None]:
        del status[key]
