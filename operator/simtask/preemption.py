"""Why a pod ended without the simulator ending it: preemption, node loss, eviction.

Pure functions of the objects the API server returns (camelCase JSON dicts). The small
readers at the end (`simulator_status`, ...) are shared
with `simtask.podstate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from simtask.conditions import condition_true, find_condition
from simtask.lifecycle import Phase
from simtask.names import SIMULATOR_CONTAINER
from simtask.timestamps import parse_ts

#: A Kubernetes object as the API server returns it.
Obj = Mapping[str, Any]

#: Node labels (key -> value, compared case-insensitively) that mark a spot node.
SPOT_NODE_LABELS: Mapping[str, str] = {
    "cloud.google.com/gke-spot": "true",
    # GKE's preemptible VMs, the predecessor of spot VMs: reclaimed the same way.
    "cloud.google.com/gke-preemptible": "true",
    "karpenter.sh/capacity-type": "spot",
    "eks.amazonaws.com/capacityType": "SPOT",
    "kubernetes.azure.com/scalesetpriority": "spot",
}

#: `DisruptionTarget` reasons (Kubernetes >= 1.26).
TAINT_MANAGER = "DeletionByTaintManager"
EVICTION_API = "EvictionByEvictionAPI"
POD_GC = "DeletionByPodGC"
KUBELET = "TerminationByKubelet"
SCHEDULER_PREEMPTION = "PreemptionByScheduler"
# The name of the scheduler's reason while the feature was alpha (Kubernetes 1.26).
SCHEDULER_PREEMPTION_OLD = "PreemptionByKubeScheduler"

#: Taints a node lifecycle controller puts on a node it lost contact with.
NODE_LOST_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})

#: Taints that say a node is being drained or is about to go away; all NoSchedule.
DRAIN_TAINTS = frozenset(
    {
        "node.kubernetes.io/unschedulable",
        "ToBeDeletedByClusterAutoscaler",
        "karpenter.sh/disrupted",
        "karpenter.sh/disruption",
        "cloud.google.com/impending-node-termination",
        "aws-node-termination-handler/spot-itn",
    }
)

#: Pod `status.reason` values the kubelet sets when a graceful node shutdown ends a pod.
_SHUTDOWN_POD_REASONS = frozenset({"Terminated", "Shutdown"})
#: The Job conditions that say it failed (FailureTarget comes first, since Kubernetes 1.31).
_JOB_FAILED = ("Failed", "FailureTarget")
#: Container termination reasons that are not the simulator's own exit.
_NOT_AN_EXIT = frozenset({"ContainerStatusUnknown"})


@dataclass(frozen=True)
class Disruption:
    """An attempt lost through no fault of the simulator."""

    #: "preempted": the infrastructure took the executor away (resubmission may follow);
    #: "executor-failed": the executor broke for a reason outside the simulator.
    kind: Literal["preempted", "executor-failed"]
    #: One CamelCase word, e.g. "NodeTainted", "EvictedByAPI", "NodeDeleted".
    reason: str
    #: What happened and on which node, in words a user can act on.
    message: str
    #: When the cluster recorded it, when it did.
    time: datetime | None = None


def is_spot_node(node_labels: Mapping[str, str]) -> bool:
    """Whether a node's labels mark it as a spot (preemptible) node."""
    return any(
        str(node_labels.get(key, "")).lower() == value.lower()
        for key, value in SPOT_NODE_LABELS.items()
    )


def preempted_phase(spot: bool) -> Phase:
    """The phase of an attempt whose executor was taken away: SpotPreempted on spot nodes."""
    return Phase.SPOT_PREEMPTED if spot else Phase.EXECUTOR_TERMINATED


def classify_disruption(
    pod: Obj | None,
    node: Obj | None,
    node_name: str | None,
    job: Obj | None,
    *,
    node_gone: bool = False,
) -> Disruption | None:
    """Why the attempt's executor was lost, or None when the simulator ended it or nothing says so.

    `pod` is the attempt's pod (None once it is gone), `node` the node it was bound to
    (None when unknown or deleted), `node_name` the name of that node when known (the pod's
    `spec.nodeName`, or what the task's status recorded), `job` the attempt's Job. The
    caller deals with deletions the operator made itself (kill, hold) before asking.
    `node_gone`: the node is known to be deleted (a cloud VM gone): a pod that has not ended
    there is lost now, though the API still shows it until pod GC removes it.
    """
    node_name = _node_name(pod) or node_name
    if pod is None:
        return _classify_gone(node, node_name, job)

    status: Obj = pod.get("status") or {}
    if status.get("phase") == "Succeeded":
        return None
    exited, exit_time = _own_exit(pod)
    target = find_condition(pod, "DisruptionTarget")
    if target is not None and target.get("status") == "True":
        since = parse_ts(target.get("lastTransitionTime"))
        if exited and exit_time is not None and since is not None and exit_time < since:
            return None  # the simulator had already exited when the disruption came
        return _from_disruption_target(target, pod, node, node_name)

    pod_reason = str(status.get("reason") or "")
    pod_message = str(status.get("message") or "")
    if pod_reason == "DeadlineExceeded":
        return None  # spec.timeToLive ran out: TTLExceeded, not a lost executor
    if pod_reason == "Evicted":
        return _kubelet_eviction(pod_message, node_name, _pod_end_time(pod))
    if pod_reason in _SHUTDOWN_POD_REASONS:
        return _shutdown(node_name, _pod_end_time(pod))
    if pod_reason == "Preempting":
        return _kubelet_preemption(node_name, _pod_end_time(pod))

    deleted_at = _deletion_requested(pod)
    if exited and (deleted_at is None or (exit_time is not None and exit_time < deleted_at)):
        return None  # the simulator's own exit code ends the attempt
    if deleted_at is not None:
        found = _node_disruption(node, node_name, deleted_at)
        if found is not None:
            return found
        return Disruption(
            "preempted",
            "PodDeleted",
            f"the pod was deleted{_on(node_name)} by someone other than the operator",
            deleted_at,
        )
    if node_gone and node_name:
        return _node_disruption(None, node_name, None)
    if status.get("phase") == "Failed":
        # Failed without an exit of the simulator: the executor broke (node restart,
        # kubelet admission refusal, container status lost).
        when = _pod_end_time(pod)
        found = _node_disruption(node, node_name, when)
        if found is not None:
            return found
        why = f": {pod_reason}" if pod_reason else ""
        said = f" ({pod_message})" if pod_message else ""
        return Disruption(
            "executor-failed",
            "ExecutorFailed",
            f"the pod failed{_on(node_name)} before the simulator exited{why}{said}",
            when,
        )
    return None


def job_failed(job: Obj | None) -> bool:
    """Whether a Job shows it failed: a Failed/FailureTarget condition or a failed pod."""
    if job is None:
        return False
    return condition_true(job, *_JOB_FAILED) is not None or (
        int((job.get("status") or {}).get("failed") or 0) >= 1
    )


def job_failure_reason(job: Obj | None) -> str | None:
    """The reason of the Job's Failed (or FailureTarget) condition, when it has one."""
    cond = condition_true(job, *_JOB_FAILED)
    return str(cond.get("reason") or "") or None if cond is not None else None


def job_failure_time(job: Obj | None) -> datetime | None:
    """When the Job's Failed (or FailureTarget) condition was set."""
    cond = condition_true(job, *_JOB_FAILED)
    return parse_ts(cond.get("lastTransitionTime")) if cond is not None else None


def node_ready(node: Obj) -> bool:
    """Whether the node's Ready condition is True (False and Unknown both count as lost)."""
    return condition_true(node, "Ready") is not None


def node_taints(node: Obj, effect: str | None = None) -> list[Obj]:
    """The node's taints, only those with `effect` when given."""
    taints: Iterable[Obj] = (node.get("spec") or {}).get("taints") or ()
    return [t for t in taints if effect is None or t.get("effect") == effect]


# --- readers shared with podstate ---------------------------------------------------


def simulator_status(pod: Obj | None) -> Obj | None:
    """The status of the simulator container in a pod, if the kubelet reported one."""
    if pod is None:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == SIMULATOR_CONTAINER:
            return status  # type: ignore[no-any-return]
    return None


def simulator_terminated(pod: Obj | None) -> Obj | None:
    """The simulator's `terminated` state (current, else last), if it terminated."""
    status = simulator_status(pod)
    if status is None:
        return None
    for key in ("state", "lastState"):
        terminated = (status.get(key) or {}).get("terminated")
        if terminated:
            return terminated  # type: ignore[no-any-return]
    return None


# --- internals ----------------------------------------------------------------------


def _node_name(pod: Obj | None) -> str | None:
    if pod is None:
        return None
    return (pod.get("spec") or {}).get("nodeName") or None


def _on(node_name: str | None) -> str:
    return f" on node {node_name}" if node_name else ""


def _own_exit(pod: Obj) -> tuple[bool, datetime | None]:
    """Whether the simulator exited with a code of its own, and when.

    A container the kubelet could not find any more (ContainerStatusUnknown) did not
    choose its exit code.
    """
    terminated = simulator_terminated(pod)
    if terminated is None or terminated.get("reason") in _NOT_AN_EXIT:
        return False, None
    return True, parse_ts(terminated.get("finishedAt"))


def _deletion_requested(pod: Obj) -> datetime | None:
    """When deletion of the pod was asked for: deletionTimestamp minus the grace period."""
    meta: Obj = pod.get("metadata") or {}
    deleted = parse_ts(meta.get("deletionTimestamp"))
    if deleted is None:
        return None
    grace = int(meta.get("deletionGracePeriodSeconds") or 0)
    return deleted - timedelta(seconds=grace)


def _pod_end_time(pod: Obj) -> datetime | None:
    """When the pod stopped: the simulator's finishedAt, else its Ready condition's change."""
    terminated = simulator_terminated(pod)
    if terminated is not None:
        finished = parse_ts(terminated.get("finishedAt"))
        if finished is not None:
            return finished
    ready = find_condition(pod, "Ready")
    return parse_ts(ready.get("lastTransitionTime")) if ready else None


def _describe_taints(taints: Iterable[Obj]) -> str:
    parts = []
    for taint in taints:
        value = taint.get("value")
        key = f"{taint.get('key')}={value}" if value else str(taint.get("key"))
        parts.append(f"{key}:{taint.get('effect')}")
    return ", ".join(parts)


def _is_drained(node: Obj) -> bool:
    spec: Obj = node.get("spec") or {}
    return bool(spec.get("unschedulable")) or any(
        t.get("key") in DRAIN_TAINTS for t in node_taints(node)
    )


def _node_disruption(
    node: Obj | None, node_name: str | None, when: datetime | None
) -> Disruption | None:
    """What the node shows happened to it, or None when it looks healthy (or is unknown)."""
    if node_name is None:
        return None
    if node is None:
        return Disruption("preempted", "NodeDeleted", f"node {node_name} was deleted", when)
    no_execute = node_taints(node, "NoExecute")
    lost = [t for t in no_execute if t.get("key") in NODE_LOST_TAINTS]
    if not node_ready(node) or lost:
        return Disruption(
            "preempted",
            "NodeLost",
            f"node {node_name} stopped reporting (not Ready); its pods were lost",
            when,
        )
    if no_execute:
        return Disruption(
            "preempted",
            "NodeTainted",
            f"node {node_name} got a NoExecute taint ({_describe_taints(no_execute)})",
            when,
        )
    if _is_drained(node):
        drain = [t for t in node_taints(node) if t.get("key") in DRAIN_TAINTS]
        detail = f" ({_describe_taints(drain)})" if drain else ""
        return Disruption(
            "preempted",
            "NodeDrained",
            f"node {node_name} was cordoned and drained{detail}",
            when,
        )
    return None


def _classify_gone(node: Obj | None, node_name: str | None, job: Obj | None) -> Disruption | None:
    """The pod is gone: decide from the Job and the node what is left of."""
    if not job_failed(job):
        return None
    if job_failure_reason(job) == "DeadlineExceeded":
        return None  # the Job's own deadline: a TTLExceeded, not a lost executor
    return _lost(node, node_name, job_failure_time(job), job_failed=True)


def classify_vanished(node: Obj | None, node_name: str | None, when: datetime) -> Disruption:
    """A running attempt's pod and Job are both gone (deleted by hand, or before a restart):
    what the node shows, else an executor lost for reasons the cluster no longer tells."""
    return _lost(node, node_name, when, job_failed=False)


def _lost(
    node: Obj | None, node_name: str | None, when: datetime | None, *, job_failed: bool
) -> Disruption:
    gone = "the pod is gone" if job_failed else "the pod and its Job are gone"
    found = _node_disruption(node, node_name, when)
    if found is not None:
        return Disruption(found.kind, found.reason, f"{found.message}; {gone}", when)
    where = f" from node {node_name}" if node_name else " before it was seen on a node"
    what = (
        f"the pod disappeared{where} and its Job failed"
        if job_failed
        else f"the pod and its Job disappeared{where}"
    )
    return Disruption(
        "executor-failed", "ExecutorLost", f"{what}; the cluster does not say why", when
    )


def _kubelet_eviction(message: str, node_name: str | None, when: datetime | None) -> Disruption:
    """A pod the kubelet evicted: node pressure, or the pod outgrew its own storage limit."""
    said = f": {message}" if message else ""
    if "limit" in message and not message.startswith("The node was low on resource"):
        return Disruption(
            "executor-failed",
            "EphemeralStorageLimitExceeded",
            f"the kubelet evicted the pod{_on(node_name)}{said}",
            when,
        )
    return Disruption(
        "executor-failed",
        "NodePressureEviction",
        f"the kubelet evicted the pod{_on(node_name)} because the node ran short of "
        f"resources{said}",
        when,
    )


def _shutdown(node_name: str | None, when: datetime | None) -> Disruption:
    return Disruption(
        "preempted",
        "NodeShutdown",
        f"node {node_name or '(unknown)'} shut down and the kubelet terminated the pod",
        when,
    )


def _kubelet_preemption(node_name: str | None, when: datetime | None) -> Disruption:
    return Disruption(
        "preempted",
        "PreemptedByKubelet",
        f"the kubelet{_on(node_name)} preempted the pod to admit a critical pod",
        when,
    )


def _from_disruption_target(
    cond: Obj, pod: Obj, node: Obj | None, node_name: str | None
) -> Disruption:
    """A Disruption from the pod's DisruptionTarget condition."""
    reason = str(cond.get("reason") or "")
    said = str(cond.get("message") or "")
    when = parse_ts(cond.get("lastTransitionTime"))
    status: Obj = pod.get("status") or {}
    where = node_name or "(unknown)"
    if reason == TAINT_MANAGER:
        taints = _describe_taints(node_taints(node, "NoExecute")) if node else ""
        detail = f" ({taints})" if taints else ""
        return Disruption(
            "preempted",
            "NodeTainted",
            f"node {where} got a NoExecute taint{detail}; the pod was deleted",
            when,
        )
    if reason == EVICTION_API:
        why = f" while node {where} was drained" if node is not None and _is_drained(node) else ""
        return Disruption(
            "preempted",
            "EvictedByAPI",
            f"the pod was evicted from node {where} through the Eviction API{why}",
            when,
        )
    if reason == POD_GC:
        return Disruption(
            "preempted",
            "NodeDeleted",
            f"node {where} was deleted; the pod garbage collector removed the pod",
            when,
        )
    if reason in (SCHEDULER_PREEMPTION, SCHEDULER_PREEMPTION_OLD):
        return Disruption(
            "preempted",
            "PreemptedByScheduler",
            f"the scheduler preempted the pod on node {where} to make room for a "
            "higher-priority pod",
            when,
        )
    if reason == KUBELET:
        pod_reason = str(status.get("reason") or "")
        if pod_reason == "Evicted":
            return _kubelet_eviction(str(status.get("message") or said), node_name, when)
        if pod_reason == "Preempting":
            return _kubelet_preemption(node_name, when)
        return _shutdown(node_name, when)
    detail = f": {said}" if said else ""
    return Disruption(
        "preempted",
        "Disrupted",
        f"the pod on node {where} was disrupted ({reason or 'no reason given'}){detail}",
        when,
    )
