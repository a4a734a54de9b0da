"""What one attempt shows: its Job, pod and node as a sequence of observed phases.

Pure functions of the objects the API server returns (camelCase JSON dicts), following
the table "Phases from what the cluster shows" of docs/design.md. Every step carries the
cluster's own timestamp, so the result is the same after an operator restart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from simtask import preemption
from simtask.builders import INPUT_VOLUME_PREFIX
from simtask.conditions import condition_true, find_condition
from simtask.lifecycle import Phase
from simtask.names import SIMULATOR_CONTAINER
from simtask.preemption import (
    Obj,
    simulator_status,
    simulator_terminated,
)
from simtask.timestamps import parse_ts

#: Phases that end an attempt.
ENDINGS: frozenset[Phase] = frozenset(
    {
        Phase.SUCCESS,
        Phase.FAILED,
        Phase.TTL_EXCEEDED,
        Phase.EXECUTOR_FAILED,
        Phase.SPOT_PREEMPTED,
        Phase.EXECUTOR_TERMINATED,
    }
)

#: Waiting reasons of a container whose image cannot be pulled.
IMAGE_PULL_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
#: Waiting reason of a container whose configuration (Secret/ConfigMap key) is missing.
CONFIG_ERROR = "CreateContainerConfigError"
#: Termination reasons of a container the runtime could not start at all.
_START_FAILURES = frozenset({"StartError", "ContainerCannotRun"})
#: Longest piece of a termination message (the simulator's last log lines) we repeat.
_MAX_TAIL = 300
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    """One phase an attempt passed through, with the cluster's time for it."""

    phase: Phase
    #: When the cluster says it happened; None when it is implied but not timestamped.
    time: datetime | None
    #: One CamelCase word.
    reason: str
    message: str


@dataclass(frozen=True)
class AttemptObservation:
    """What the Job, pod and node of one attempt show."""

    #: Phases this attempt observably passed through, in order, from Started on.
    steps: tuple[Step, ...] = ()
    job_name: str | None = None
    pod_name: str | None = None
    node_name: str | None = None
    #: The simulator's exit code, whenever it terminated.
    exit_code: int | None = None
    #: When the pod was bound to its node.
    start_time: datetime | None = None
    #: When the attempt ended (the simulator's finishedAt when it has one).
    end_time: datetime | None = None
    #: Whether the last step ends the attempt.
    ended: bool = False
    #: The Job would never end by itself (e.g. image pull failure): the operator deletes it.
    delete_job: bool = False
    #: The scheduler's message while the pod cannot be placed.
    unschedulable_message: str | None = None
    #: A pod of this attempt may still be running on a live node (not Succeeded/Failed):
    #: wait for it to go before starting another attempt that shares its outputs.
    executor_active: bool = False

    @property
    def last(self) -> Step | None:
        """The latest step, if any."""
        return self.steps[-1] if self.steps else None


def observe_attempt(
    job: Obj | None,
    pods: Sequence[Obj],
    node: Obj | None,
    *,
    spot: bool,
    node_name: str | None = None,
    node_gone: bool = False,
) -> AttemptObservation:
    """The steps one attempt passed through, from what its Job, pods and node show.

    `pods` are this attempt's pods; `node` the node object the pod is bound to (None if
    unknown or deleted); `spot` whether that node counts as spot; `node_name` the node
    the attempt was last seen on (from the task's status), used once the pod is gone;
    `node_gone` that node is known to be deleted, so its pods will never report again.
    """
    job_name = _name(job)
    if _job_suspended(job):
        # The Job controller deletes the pods of a suspended Job: not a disruption.
        pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    pod = pick_pod(pods)
    if node_name is None and node is not None:
        node_name = _name(node)
    if pod is None:
        return _observe_without_pod(job, node, node_name, job_name=job_name, spot=spot)

    pod_name = _name(pod)
    node_name = (pod.get("spec") or {}).get("nodeName") or node_name
    status: Obj = pod.get("status") or {}
    steps: list[Step] = []
    scheduled = find_condition(pod, "PodScheduled")
    bound = bool((pod.get("spec") or {}).get("nodeName")) or (
        scheduled is not None and scheduled.get("status") == "True"
    )
    start_time: datetime | None = None
    unschedulable: str | None = None
    if bound:
        start_time = _bound_time(pod)
        steps.append(
            Step(
                Phase.STARTED,
                start_time,
                "Scheduled",
                f"pod {pod_name} is bound to node {node_name}",
            )
        )
    elif (
        scheduled is not None
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        unschedulable = str(scheduled.get("message") or "the scheduler cannot place the pod")

    terminated = simulator_terminated(pod)
    exit_code: int | None = None
    if terminated is not None and terminated.get("reason") != "ContainerStatusUnknown":
        exit_code = _int_or_none(terminated.get("exitCode"))
    steps.extend(_computation_steps(pod, terminated, exit_code))

    ending, delete_job = _ending(
        pod, job, node, node_name, terminated, exit_code, spot=spot, node_gone=node_gone
    )
    if ending is not None:
        steps = _complete_chain(steps, ending.phase)
        steps.append(ending)
    end_time: datetime | None = None
    if ending is not None:
        finished = parse_ts(terminated.get("finishedAt")) if terminated else None
        end_time = finished or ending.time
    # A pod being deleted from a node that is gone or down will never report again.
    deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    node_down = node is None or not preemption.node_ready(node)
    active = status.get("phase") not in ("Succeeded", "Failed") and not (deleting and node_down)
    return AttemptObservation(
        steps=tuple(steps),
        job_name=job_name,
        pod_name=pod_name,
        node_name=node_name,
        exit_code=exit_code,
        start_time=start_time,
        end_time=end_time,
        ended=ending is not None,
        delete_job=delete_job,
        unschedulable_message=unschedulable,
        executor_active=active,
    )


def pick_pod(pods: Sequence[Obj]) -> Obj | None:
    """The most relevant pod of an attempt: a non-terminating one first, then the newest."""
    if not pods:
        return None

    def key(pod: Obj) -> tuple[bool, datetime]:
        meta: Obj = pod.get("metadata") or {}
        created = parse_ts(meta.get("creationTimestamp")) or _EPOCH
        return (not meta.get("deletionTimestamp"), created)

    return max(pods, key=key)


def parse_quantity(text: object) -> Decimal:
    """The value of a Kubernetes resource quantity ("500m", "2", "1.5", "4Gi", "1e3")."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        return Decimal(number) * _QUANTITY_SUFFIXES[suffix]
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc


def compute_seconds(
    job: Obj | None, start: datetime | None, end: datetime | None
) -> tuple[float, float]:
    """(CPU core-seconds, GPU-seconds) the simulator container of `job` held from start to end.

    Reads the container's cpu request and `nvidia.com/gpu` limit in the Job's pod
    template; (0, 0) when a time or the Job is unknown.
    """
    if job is None or start is None or end is None:
        return 0.0, 0.0
    seconds = Decimal(str(max(0.0, (end - start).total_seconds())))
    container = _template_simulator(job)
    resources: Obj = container.get("resources") or {}
    requests: Obj = resources.get("requests") or {}
    limits: Obj = resources.get("limits") or {}
    cpu = _quantity_or_zero(requests.get("cpu", limits.get("cpu")))
    gpu = _quantity_or_zero(limits.get("nvidia.com/gpu", requests.get("nvidia.com/gpu")))
    return float(cpu * seconds), float(gpu * seconds)


# --- internals ----------------------------------------------------------------------

_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)
_QUANTITY_SUFFIXES: Mapping[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def _quantity_or_zero(value: object) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    try:
        return parse_quantity(value)
    except ValueError:
        return Decimal(0)


def _name(obj: Obj | None) -> str | None:
    if obj is None:
        return None
    return (obj.get("metadata") or {}).get("name") or None


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None


def _job_suspended(job: Obj | None) -> bool:
    return job is not None and bool((job.get("spec") or {}).get("suspend"))


def _job_complete_time(job: Obj | None) -> datetime | None:
    cond = condition_true(job, "SuccessCriteriaMet", "Complete")
    if cond is not None:
        when = parse_ts(cond.get("lastTransitionTime"))
        if when is not None:
            return when
    return parse_ts(((job or {}).get("status") or {}).get("completionTime"))


def _template_simulator(job: Obj) -> Obj:
    """The simulator container in the Job's pod template (the first one if none is named so)."""
    spec: Obj = (((job.get("spec") or {}).get("template") or {}).get("spec")) or {}
    containers: Sequence[Obj] = spec.get("containers") or ()
    for container in containers:
        if container.get("name") == SIMULATOR_CONTAINER:
            return container
    return containers[0] if containers else {}


def _pod_simulator_spec(pod: Obj) -> Obj:
    for container in (pod.get("spec") or {}).get("containers") or ():
        if container.get("name") == SIMULATOR_CONTAINER:
            return container  # type: ignore[no-any-return]
    return {}


def _bound_time(pod: Obj) -> datetime | None:
    """When the pod was bound: PodScheduled's lastTransitionTime, else the kubelet's startTime."""
    scheduled = find_condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "True":
        when = parse_ts(scheduled.get("lastTransitionTime"))
        if when is not None:
            return when
    return parse_ts((pod.get("status") or {}).get("startTime"))


def _real_start(value: object) -> datetime | None:
    """A container start time, or None for the zero time a never-started container shows."""
    when = parse_ts(value)
    return when if when is not None and when > _EPOCH else None


def _computation_steps(pod: Obj, terminated: Obj | None, exit_code: int | None) -> list[Step]:
    """ComputationStarted and ComputationEnded, as far as the simulator's state shows them."""
    status = simulator_status(pod)
    if status is None:
        return []
    steps: list[Step] = []
    running = (status.get("state") or {}).get("running")
    started: datetime | None = None
    has_started = False
    if running is not None:
        started, has_started = _real_start(running.get("startedAt")), True
    elif terminated is not None and terminated.get("reason") not in _START_FAILURES:
        started = _real_start(terminated.get("startedAt"))
        has_started = started is not None or terminated.get("reason") != "ContainerStatusUnknown"
    if has_started:
        steps.append(
            Step(Phase.COMPUTATION_STARTED, started, "SimulatorRunning", "the simulator started")
        )
    if terminated is not None and exit_code == 0 and has_started:
        steps.append(
            Step(
                Phase.COMPUTATION_ENDED,
                parse_ts(terminated.get("finishedAt")),
                "SimulatorExited",
                "the simulator exited with code 0; outputs are being written",
            )
        )
    return steps


def _success_time(pod: Obj | None, terminated: Obj | None, job: Obj | None) -> datetime | None:
    """When the attempt succeeded: the pod's completion, else the Job's."""
    if pod is not None:
        ready = find_condition(pod, "Ready")
        if ready is not None and ready.get("reason") == "PodCompleted":
            when = parse_ts(ready.get("lastTransitionTime"))
            if when is not None:
                return when
        if terminated is not None:
            when = parse_ts(terminated.get("finishedAt"))
            if when is not None:
                return when
    return _job_complete_time(job)


def _success(pod: Obj | None, terminated: Obj | None, job: Obj | None) -> Step:
    return Step(
        Phase.SUCCESS,
        _success_time(pod, terminated, job),
        "Succeeded",
        "the simulator succeeded",
    )


def _ttl_exceeded(pod: Obj | None, terminated: Obj | None, job: Obj | None) -> Step:
    when = parse_ts(terminated.get("finishedAt")) if terminated else None
    said = str(((pod or {}).get("status") or {}).get("message") or "")
    detail = f" ({said})" if said else ""
    return Step(
        Phase.TTL_EXCEEDED,
        when or preemption.job_failure_time(job),
        "DeadlineExceeded",
        f"the attempt ran longer than spec.timeToLive allows{detail}",
    )


def _disruption_step(found: preemption.Disruption, *, spot: bool) -> Step:
    phase = preemption.preempted_phase(spot) if found.kind == "preempted" else Phase.EXECUTOR_FAILED
    return Step(phase, found.time, found.reason, found.message)


def _tail(text: object) -> str:
    """The end of a termination message (the simulator's last log lines), on one line."""
    lines = [line.strip() for line in str(text or "").strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-3:])
    return tail if len(tail) <= _MAX_TAIL else "..." + tail[-_MAX_TAIL:]


def _simulator_failed(pod: Obj, terminated: Obj, exit_code: int | None) -> Step:
    """The Failed step of a simulator that exited non-zero, was OOM-killed or never started."""
    reason = terminated.get("reason")
    when = parse_ts(terminated.get("finishedAt"))
    if reason == "OOMKilled":
        limit = ((_pod_simulator_spec(pod).get("resources") or {}).get("limits") or {}).get(
            "memory"
        )
        what = f"its memory limit of {limit}" if limit else "the memory available to it"
        return Step(
            Phase.FAILED,
            when,
            "OOMKilled",
            f"the simulator was killed (out of memory) for using more than {what}",
        )
    if reason in _START_FAILURES:
        said = _tail(terminated.get("message"))
        return Step(
            Phase.FAILED,
            when,
            "StartError",
            f"the simulator could not be started (exit code {exit_code})"
            + (f": {said}" if said else ""),
        )
    tail = _tail(terminated.get("message"))
    return Step(
        Phase.FAILED,
        when,
        "NonZeroExit",
        f"simulator exited with code {exit_code}" + (f": {tail}" if tail else ""),
    )


def _waiting_failure(pod: Obj) -> Step | None:
    """Failed when the simulator cannot be created: image not pullable, config missing."""
    status = simulator_status(pod)
    waiting = ((status or {}).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    said = str(waiting.get("message") or "")
    if reason in IMAGE_PULL_FAILURES:
        image = _pod_simulator_spec(pod).get("image") or (status or {}).get("image") or "?"
        return Step(
            Phase.FAILED,
            None,
            "ImagePullFailed",
            f"image {image} cannot be pulled ({reason})" + (f": {said}" if said else ""),
        )
    if reason == CONFIG_ERROR:
        return Step(
            Phase.FAILED,
            None,
            CONFIG_ERROR,
            "the simulator container cannot be created"
            + (f": {said}" if said else " (a Secret or ConfigMap it needs is missing)"),
        )
    return None


def _ending(
    pod: Obj,
    job: Obj | None,
    node: Obj | None,
    node_name: str | None,
    terminated: Obj | None,
    exit_code: int | None,
    *,
    spot: bool,
    node_gone: bool = False,
) -> tuple[Step | None, bool]:
    """The step ending the attempt, if the pod or Job shows one, and whether to delete the Job."""
    status: Obj = pod.get("status") or {}
    if status.get("phase") == "Succeeded" or condition_true(job, "Complete", "SuccessCriteriaMet"):
        return _success(pod, terminated, job), False
    if (
        status.get("reason") == "DeadlineExceeded"
        or preemption.job_failure_reason(job) == "DeadlineExceeded"
    ):
        return _ttl_exceeded(pod, terminated, job), False
    found = preemption.classify_disruption(pod, node, node_name, job, node_gone=node_gone)
    if found is not None:
        return _disruption_step(found, spot=spot), False
    if terminated is not None and exit_code is not None and exit_code != 0:
        return _simulator_failed(pod, terminated, exit_code), False
    failure = _waiting_failure(pod)
    if failure is not None:
        return failure, True
    return None, False


def _observe_without_pod(
    job: Obj | None,
    node: Obj | None,
    node_name: str | None,
    *,
    job_name: str | None,
    spot: bool,
) -> AttemptObservation:
    """No pod (yet, or any more): only a finished Job says anything."""
    ending: Step | None = None
    if condition_true(job, "Complete", "SuccessCriteriaMet"):
        ending = _success(None, None, job)
    elif preemption.job_failure_reason(job) == "DeadlineExceeded":
        ending = _ttl_exceeded(None, None, job)
    else:
        found = preemption.classify_disruption(None, node, node_name, job)
        if found is not None:
            ending = _disruption_step(found, spot=spot)
    if ending is None:
        return AttemptObservation(job_name=job_name)
    steps = [*_complete_chain([], ending.phase), ending]
    return AttemptObservation(
        steps=tuple(steps),
        job_name=job_name,
        node_name=node_name,
        end_time=ending.time,
        ended=True,
    )


def vanished_attempt(
    node: Obj | None,
    node_name: str | None,
    *,
    spot: bool,
    job_name: str | None,
    pod_name: str | None,
    now: datetime,
) -> AttemptObservation:
    """A running attempt whose pod and Job are both gone: it ended, lost, now."""
    step = _disruption_step(preemption.classify_vanished(node, node_name, now), spot=spot)
    return AttemptObservation(
        steps=(step,),
        job_name=job_name,
        pod_name=pod_name,
        node_name=node_name,
        end_time=now,
        ended=True,
    )


#: The phases that must come before an ending, in order, for the move to be allowed.
_BEFORE: Mapping[Phase, tuple[Phase, ...]] = {
    Phase.SUCCESS: (Phase.STARTED, Phase.COMPUTATION_STARTED, Phase.COMPUTATION_ENDED),
}
_IMPLIED: Mapping[Phase, tuple[str, str]] = {
    Phase.STARTED: ("Scheduled", "the pod was bound to a node (time not recorded)"),
    Phase.COMPUTATION_STARTED: ("SimulatorRunning", "the simulator started (time not recorded)"),
    Phase.COMPUTATION_ENDED: ("SimulatorExited", "the simulator exited with code 0"),
}


def _complete_chain(steps: list[Step], ending: Phase) -> list[Step]:
    """`steps` with the phases an ending implies (untimed) added where the cluster lost them."""
    if ending == Phase.FAILED and not steps:
        return steps  # Submitted -> Failed: the executor could never be created
    needed = _BEFORE.get(ending, (Phase.STARTED,))
    seen = {step.phase for step in steps}
    result = list(steps)
    for position, phase in enumerate(needed):
        if phase not in seen:
            reason, message = _IMPLIED[phase]
            result.insert(position, Step(phase, None, reason, message))
            seen.add(phase)
    return result


#: What the kubelet says of a Secret volume it cannot mount (its FailedMount event):
#: `MountVolume.SetUp failed for volume "input-creds" : secret "creds" not found`.
_SECRET_NOT_FOUND = re.compile(
    r'volume "(?P<volume>[^"]+)"\s*:\s*secret "(?P<secret>[^"]+)" not found'
)


def waiting_to_mount(pod: Obj | None) -> bool:
    """Whether the pod is bound and its simulator still waits in ContainerCreating (where a
    volume that cannot be mounted keeps it)."""
    if pod is None or not (pod.get("spec") or {}).get("nodeName"):
        return False
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == SIMULATOR_CONTAINER:
            waiting = (status.get("state") or {}).get("waiting") or {}
            return waiting.get("reason") == "ContainerCreating"
    return (pod.get("status") or {}).get("phase") == "Pending"


def missing_secret_inputs(events: Sequence[Obj], namespace: str) -> list[str]:
    """The Secret inputs a pod's FailedMount events say do not exist, in the words of the
    operator's own input check (`PendingInput`), so a user reads the same either way."""
    found: dict[str, str] = {}
    for event in events:
        match = _SECRET_NOT_FOUND.search(str(event.get("message") or ""))
        if match is None:
            continue
        found[match["volume"].removeprefix(INPUT_VOLUME_PREFIX)] = match["secret"]
    return [
        f"input {name!r}: Secret {secret!r} does not exist in namespace {namespace!r} "
        "(the kubelet cannot mount it)"
        for name, secret in sorted(found.items())
    ]
