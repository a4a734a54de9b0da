"""Why a pod ended without the simulator ending it: every disruption the cluster can show."""

from __future__ import annotations

from typing import Any

import pytest

from simtask.lifecycle import Phase
from simtask.preemption import (
    Disruption,
    classify_disruption,
    is_spot_node,
    preempted_phase,
)
from simtask.timestamps import parse_ts as parse_timestamp
from tests.unit.fixtures import (
    at,
    disruption_target,
    job,
    job_complete,
    job_failed,
    node,
    pod,
    running,
    taint,
    terminated,
)

NODE = "cpu-standard-1"
SPOT = "cpu-spot-2"


# --- spot nodes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "spot"),
    [
        ({"cloud.google.com/gke-spot": "true"}, True),
        ({"cloud.google.com/gke-preemptible": "true"}, True),
        ({"karpenter.sh/capacity-type": "spot"}, True),
        ({"eks.amazonaws.com/capacityType": "SPOT"}, True),
        ({"kubernetes.azure.com/scalesetpriority": "spot"}, True),
        ({"cloud.google.com/gke-spot": "false"}, False),
        ({"karpenter.sh/capacity-type": "on-demand"}, False),
        ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, False),
        ({"kubernetes.azure.com/scalesetpriority": "regular"}, False),
        ({"cloud.google.com/gke-nodepool": "cpu-spot"}, False),
        ({}, False),
    ],
)
def test_is_spot_node(labels: dict[str, str], spot: bool) -> None:
    assert is_spot_node(labels) is spot


def test_is_spot_node_reads_real_node_labels() -> None:
    assert is_spot_node(node(SPOT, pool="cpu-spot", spot=True)["metadata"]["labels"])
    assert not is_spot_node(node(NODE)["metadata"]["labels"])


def test_preempted_phase() -> None:
    assert preempted_phase(True) is Phase.SPOT_PREEMPTED
    assert preempted_phase(False) is Phase.EXECUTOR_TERMINATED


# --- DisruptionTarget ------------------------------------------------------------------

_TAINTED = [taint("cloud.google.com/impending-node-termination", "NoExecute", added=40)]
_DRAINED = [taint("node.kubernetes.io/unschedulable", "NoSchedule", added=40)]

# (condition reason, its message, pod status reason, node kwargs, expected kind, reason)
_TARGETS: list[tuple[str, str, str | None, dict[str, Any], str, str]] = [
    (
        "DeletionByTaintManager",
        "Taint manager: deleting due to NoExecute taint",
        None,
        {"taints": _TAINTED},
        "preempted",
        "NodeTainted",
    ),
    (
        "EvictionByEvictionAPI",
        "Eviction API: evicting",
        None,
        {"taints": _DRAINED, "unschedulable": True},
        "preempted",
        "EvictedByAPI",
    ),
    (
        "DeletionByPodGC",
        "PodGC: node no longer exists",
        None,
        {},
        "preempted",
        "NodeDeleted",
    ),
    (
        "TerminationByKubelet",
        "Pod was terminated in response to imminent node shutdown.",
        "Terminated",
        {},
        "preempted",
        "NodeShutdown",
    ),
    (
        "TerminationByKubelet",
        "Pod was terminated in response to imminent node shutdown.",
        "Shutdown",
        {},
        "preempted",
        "NodeShutdown",
    ),
    (
        "PreemptionByScheduler",
        "default-scheduler: preempting to accommodate a higher priority pod",
        None,
        {},
        "preempted",
        "PreemptedByScheduler",
    ),
    (
        "PreemptionByKubeScheduler",
        "default-scheduler: preempting to accommodate a higher priority pod",
        None,
        {},
        "preempted",
        "PreemptedByScheduler",
    ),
    (
        "TerminationByKubelet",
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. ",
        "Evicted",
        {},
        "executor-failed",
        "NodePressureEviction",
    ),
    (
        "TerminationByKubelet",
        "Pod was preempted by Kubelet to accommodate a critical pod.",
        "Preempting",
        {},
        "preempted",
        "PreemptedByKubelet",
    ),
]


def _disrupted_pod(
    cond_reason: str, cond_message: str, pod_reason: str | None, *, node_name: str, failed: bool
) -> dict[str, Any]:
    """A pod whose simulator ran from t=10 and was disrupted at t=50 (killed at t=52)."""
    if failed:
        return pod(
            node_name=node_name,
            phase="Failed",
            state=terminated(143, started=10, finished=52),
            reason=pod_reason,
            message=cond_message if pod_reason else None,
            extra_conditions=[disruption_target(cond_reason, cond_message, when=50)],
        )
    # Still terminating: the control plane set the condition and asked for deletion; the
    # kubelet, when it is the one ending the pod, writes the pod's reason at the same time.
    return pod(
        node_name=node_name,
        state=running(10),
        reason=pod_reason,
        message=cond_message if pod_reason else None,
        extra_conditions=[disruption_target(cond_reason, cond_message, when=50)],
        deleted=50,
    )


@pytest.mark.parametrize("failed", [True, False], ids=["pod-failed", "pod-terminating"])
@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
@pytest.mark.parametrize(
    ("cond_reason", "cond_message", "pod_reason", "node_kwargs", "kind", "reason"), _TARGETS
)
def test_disruption_target(
    cond_reason: str,
    cond_message: str,
    pod_reason: str | None,
    node_kwargs: dict[str, Any],
    kind: str,
    reason: str,
    spot: bool,
    failed: bool,
) -> None:
    name = SPOT if spot else NODE
    the_node = None if reason == "NodeDeleted" else node(name, spot=spot, **node_kwargs)
    the_pod = _disrupted_pod(cond_reason, cond_message, pod_reason, node_name=name, failed=failed)
    found = classify_disruption(the_pod, the_node, None, job(active=1))
    assert found is not None
    assert (found.kind, found.reason) == (kind, reason)
    assert name in found.message
    assert found.time == at(50)


def test_spot_and_on_demand_differ_only_in_phase() -> None:
    # The same disruption, classified the same on both kinds of nodes: only the phase the
    # caller derives from `spot` tells them apart.
    args = ("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint", None)
    on_demand = classify_disruption(
        _disrupted_pod(*args, node_name=NODE, failed=True), node(NODE), None, job()
    )
    spot = classify_disruption(
        _disrupted_pod(*args, node_name=SPOT, failed=True), node(SPOT, spot=True), None, job()
    )
    assert on_demand is not None and spot is not None
    assert on_demand.kind == spot.kind == "preempted"
    assert preempted_phase(True) != preempted_phase(False)


def test_taint_manager_message_names_the_taint() -> None:
    the_pod = _disrupted_pod(
        "DeletionByTaintManager",
        "Taint manager: deleting due to NoExecute taint",
        None,
        node_name=SPOT,
        failed=True,
    )
    found = classify_disruption(the_pod, node(SPOT, spot=True, taints=_TAINTED), None, None)
    assert found is not None
    assert "cloud.google.com/impending-node-termination:NoExecute" in found.message


def test_eviction_on_a_drained_node_says_so() -> None:
    the_pod = _disrupted_pod(
        "EvictionByEvictionAPI", "Eviction API: evicting", None, node_name=NODE, failed=True
    )
    drained = classify_disruption(
        the_pod, node(NODE, taints=_DRAINED, unschedulable=True), None, None
    )
    plain = classify_disruption(the_pod, node(NODE), None, None)
    assert drained is not None and plain is not None
    assert "drained" in drained.message
    assert "drained" not in plain.message


def test_unknown_disruption_reason_is_still_a_preemption() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(137, started=10, finished=52),
        extra_conditions=[disruption_target("SomeFutureReason", "the cluster needed it", when=50)],
    )
    found = classify_disruption(the_pod, node(NODE), None, job())
    assert found == Disruption(
        "preempted",
        "Disrupted",
        f"the pod on node {NODE} was disrupted (SomeFutureReason): the cluster needed it",
        at(50),
    )


def test_disruption_target_false_is_ignored() -> None:
    cond = disruption_target("EvictionByEvictionAPI", "Eviction API: evicting", when=50)
    cond["status"] = "False"
    the_pod = pod(state=running(10), extra_conditions=[cond])
    assert classify_disruption(the_pod, node(NODE), None, job(active=1)) is None


# --- the simulator ended it ------------------------------------------------------------


def test_pod_that_succeeded_despite_a_disruption_target_ended_normally() -> None:
    the_pod = pod(
        phase="Succeeded",
        state=terminated(0, started=10, finished=55),
        extra_conditions=[
            disruption_target("EvictionByEvictionAPI", "Eviction API: evicting", when=50)
        ],
    )
    assert classify_disruption(the_pod, node(NODE), None, job(conditions=job_complete(56))) is None


def test_simulator_failure_before_the_disruption_is_the_simulators() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(3, started=10, finished=30),
        extra_conditions=[
            disruption_target(
                "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint", when=50
            )
        ],
    )
    assert classify_disruption(the_pod, node(NODE, taints=_TAINTED), None, job()) is None


@pytest.mark.parametrize("code", [1, 2, 137])
def test_plain_nonzero_exit_is_not_a_disruption(code: int) -> None:
    the_pod = pod(phase="Failed", state=terminated(code, started=10, finished=30))
    assert (
        classify_disruption(the_pod, node(NODE), None, job(failed=1, conditions=job_failed(31)))
        is None
    )


def test_oom_kill_is_not_a_disruption() -> None:
    the_pod = pod(
        phase="Failed", state=terminated(137, started=10, finished=30, reason="OOMKilled")
    )
    assert classify_disruption(the_pod, node(NODE), None, job()) is None


def test_deadline_exceeded_is_not_a_disruption() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(137, started=10, finished=100),
        reason="DeadlineExceeded",
        message="Pod was active on the node longer than the specified deadline",
    )
    assert classify_disruption(the_pod, node(NODE), None, job()) is None


@pytest.mark.parametrize("state", [running(10), None], ids=["running", "waiting"])
def test_running_pod_is_not_a_disruption(state: dict[str, Any] | None) -> None:
    assert classify_disruption(pod(state=state), node(NODE), None, job(active=1)) is None


@pytest.mark.parametrize(
    "the_node",
    [
        None,
        node(NODE, ready="Unknown", taints=[taint("node.kubernetes.io/unreachable", "NoExecute")]),
    ],
    ids=["node-gone", "node-not-ready"],
)
def test_pod_still_running_on_a_lost_node_is_not_my_concern(
    the_node: dict[str, Any] | None,
) -> None:
    assert classify_disruption(pod(state=running(10)), the_node, NODE, job(active=1)) is None


# --- kubelet without DisruptionTarget ---------------------------------------------------


def test_node_pressure_eviction_without_disruption_target() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(137, started=10, finished=40),
        reason="Evicted",
        message=(
            "The node was low on resource: ephemeral-storage. "
            "Threshold quantity: 10Gi, available: 9Gi. "
        ),
    )
    found = classify_disruption(the_pod, node(NODE), None, job())
    assert found is not None
    assert (found.kind, found.reason) == ("executor-failed", "NodePressureEviction")
    assert "ephemeral-storage" in found.message and NODE in found.message
    assert found.time == at(40)


def test_eviction_for_the_pods_own_storage_limit() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(137, started=10, finished=40),
        reason="Evicted",
        message="Pod ephemeral local storage usage exceeds the total limit of containers 10Gi. ",
    )
    found = classify_disruption(the_pod, node(NODE), None, job())
    assert found is not None
    assert (found.kind, found.reason) == ("executor-failed", "EphemeralStorageLimitExceeded")


def test_shutdown_reason_without_disruption_target() -> None:
    the_pod = pod(
        node_name=SPOT,
        phase="Failed",
        state=terminated(143, started=10, finished=40),
        reason="Shutdown",
        message="Pod was terminated in response to imminent node shutdown.",
    )
    found = classify_disruption(the_pod, node(SPOT, spot=True), None, job())
    assert found is not None
    assert (found.kind, found.reason) == ("preempted", "NodeShutdown")


# --- deleted pods -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_node", "reason"),
    [
        (None, "NodeDeleted"),
        (
            node(
                NODE,
                taints=[taint("node.kubernetes.io/out-of-service", "NoExecute", "nodeshutdown")],
            ),
            "NodeTainted",
        ),
        (
            node(NODE, ready="False", taints=[taint("node.kubernetes.io/not-ready", "NoExecute")]),
            "NodeLost",
        ),
        (node(NODE, taints=_DRAINED, unschedulable=True), "NodeDrained"),
        (node(NODE), "PodDeleted"),
    ],
    ids=["node-deleted", "node-tainted", "node-not-ready", "node-drained", "node-healthy"],
)
def test_deleted_pod_without_disruption_target(
    the_node: dict[str, Any] | None, reason: str
) -> None:
    the_pod = pod(state=running(10), deleted=50)
    found = classify_disruption(the_pod, the_node, NODE, job(active=1))
    assert found is not None
    assert (found.kind, found.reason) == ("preempted", reason)
    assert found.time == at(50)  # deletion asked at 50, deletionTimestamp is 50 + grace


def test_simulator_exit_before_the_deletion_wins() -> None:
    the_pod = pod(phase="Failed", state=terminated(2, started=10, finished=30), deleted=50)
    assert classify_disruption(the_pod, None, NODE, job()) is None


def test_exit_caused_by_the_deletion_is_not_the_simulators() -> None:
    the_pod = pod(phase="Failed", state=terminated(143, started=10, finished=55), deleted=50)
    found = classify_disruption(the_pod, node(NODE, ready="Unknown"), NODE, job())
    assert found is not None and found.reason == "NodeLost"


def test_failed_pod_whose_container_status_was_lost() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(
            137,
            started=10,
            finished=60,
            reason="ContainerStatusUnknown",
            message="The container could not be located when the pod was terminated",
        ),
    )
    lost = classify_disruption(the_pod, node(NODE, ready="Unknown"), None, job())
    assert lost is not None and (lost.kind, lost.reason) == ("preempted", "NodeLost")
    healthy = classify_disruption(the_pod, node(NODE), None, job())
    assert healthy is not None and (healthy.kind, healthy.reason) == (
        "executor-failed",
        "ExecutorFailed",
    )


def test_pod_rejected_by_the_kubelet() -> None:
    the_pod = pod(
        phase="Failed",
        reason="OutOfnvidia.com/gpu",
        message="Node didn't have enough resource: nvidia.com/gpu",
    )
    del the_pod["status"]["containerStatuses"]
    found = classify_disruption(the_pod, node(NODE), None, job())
    assert found is not None
    assert found.kind == "executor-failed"
    assert "enough resource" in found.message


# --- the pod is already gone -----------------------------------------------------------


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
@pytest.mark.parametrize(
    ("node_kwargs", "kind", "reason"),
    [
        (None, "preempted", "NodeDeleted"),
        (
            {"taints": [taint("cloud.google.com/impending-node-termination", "NoExecute")]},
            "preempted",
            "NodeTainted",
        ),
        ({"taints": _DRAINED, "unschedulable": True}, "preempted", "NodeDrained"),
        ({"taints": [taint("karpenter.sh/disrupted", "NoSchedule")]}, "preempted", "NodeDrained"),
        (
            {"ready": "Unknown", "taints": [taint("node.kubernetes.io/unreachable", "NoExecute")]},
            "preempted",
            "NodeLost",
        ),
        ({"ready": "False"}, "preempted", "NodeLost"),
        ({}, "executor-failed", "ExecutorLost"),
    ],
    ids=[
        "node-deleted",
        "node-tainted",
        "node-drained",
        "karpenter-disrupted",
        "node-unreachable",
        "node-not-ready",
        "node-healthy",
    ],
)
def test_pod_gone(node_kwargs: dict[str, Any] | None, kind: str, reason: str, spot: bool) -> None:
    name = SPOT if spot else NODE
    the_node = None if node_kwargs is None else node(name, spot=spot, **node_kwargs)
    the_job = job(failed=1, conditions=job_failed(60))
    found = classify_disruption(None, the_node, name, the_job)
    assert found is not None
    assert (found.kind, found.reason) == (kind, reason)
    assert name in found.message
    assert found.time == at(60)


def test_pod_gone_job_failed_by_count_only() -> None:
    # The Job controller counted the failure but has not written the condition yet.
    found = classify_disruption(None, None, NODE, job(failed=1))
    assert found is not None and found.reason == "NodeDeleted"
    assert found.time is None


@pytest.mark.parametrize(
    "the_job",
    [
        None,
        job(active=1),
        job(conditions=job_complete(60), succeeded=1),
        job(conditions=job_failed(60, "DeadlineExceeded"), failed=1),
    ],
    ids=["no-job", "job-running", "job-complete", "job-deadline"],
)
def test_pod_gone_but_nothing_says_the_executor_was_lost(the_job: dict[str, Any] | None) -> None:
    assert classify_disruption(None, None, NODE, the_job) is None


def test_pod_gone_never_seen_on_a_node() -> None:
    found = classify_disruption(None, None, None, job(failed=1, conditions=job_failed(60)))
    assert found is not None
    assert (found.kind, found.reason) == ("executor-failed", "ExecutorLost")


# --- readers ----------------------------------------------------------------------------


def test_parse_timestamp() -> None:
    assert parse_timestamp("2024-05-01T10:00:00Z") == at(0)
    assert parse_timestamp("2024-05-01T10:00:01.500000Z") == at(1.5)
    assert parse_timestamp(None) is None
    assert parse_timestamp("") is None
    assert parse_timestamp("yesterday") is None
