"""Spot preemption, node loss and automatic resubmission, one user story per way of losing a node.

Every test makes its own kwok nodes and its own MachineGroup(s), so tainting, draining or
deleting a node disturbs no other test. A spot pool's nodes carry the GKE spot label and
taint; an on-demand pool's nodes carry neither. The groups do not set `spec.spot`: the
operator tells spot from the nodes' labels, as SPEC §2 says it does when the field is absent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.cluster import condition, eventually, kubectl, kubectl_json
from tests.e2e.pools import NODE_CPU, Pool, parse_time, utc_now
from tests.e2e.tasks import (
    HEADROOM,
    SPOT_TOLERATION,
    apply,
    entry,
    get,
    history,
    jobs_of,
    patch_spec,
    pods_of,
    task_manifest,
    wait_phase,
)

pytestmark = pytest.mark.usefixtures("operator")

TASK_RESOURCES = {"cpu": "2", "memory": "1Gi"}
#: What the phase of a lost attempt is, by the kind of node it ran on.
LOST = {True: "SpotPreempted", False: "ExecutorTerminated"}
#: Phases an attempt can end in without succeeding: a test waits for any of them, then says which.
LOSS_OR_FAILURE = {"SpotPreempted", "ExecutorTerminated", "ExecutorFailed", "Failed", "TTLExceeded"}
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."


@pytest.fixture(scope="module")
def urgent_priority(cluster: str) -> Iterator[str]:
    """A PriorityClass far above the tasks' (which have none, so priority 0)."""
    name = f"e2e-urgent-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "priorityclass",
        name,
        "--value=1000000",
        "--description=e2e: production work that may preempt simulations",
    )
    yield name
    kubectl("delete", "priorityclass", name, "--ignore-not-found", check=False)


# ---------------------------------------------------------------- a task, running, then lost


def run_long_task(ns: str, name: str, pool: Pool, **spec: Any) -> dict[str, Any]:
    """Apply a task on `pool` whose simulator would run 10 minutes; return it once computing."""
    apply(
        ns,
        task_manifest(
            name, duration="10m", machineGroup=pool.group, resources=TASK_RESOURCES, **spec
        ),
    )
    task = wait_phase(ns, name, "ComputationStarted")
    assert task["status"]["nodeName"] in pool.nodes
    return task


def resume_is_short(ns: str, name: str) -> None:
    """The simulator checkpoints: what is left after a resume takes 2s.

    (The testbed's simulator does not read checkpoints; the pod annotation that sets its run
    time does, for every attempt created from now on.)
    """
    patch_spec(
        ns,
        name,
        {"podTemplate": {"metadata": {"annotations": {"testbed.simtask.dev/duration": "2s"}}}},
    )


def lost_attempt(ns: str, name: str, *, timeout: float = 60) -> dict[str, Any]:
    """Wait until attempt 1 ended without succeeding; return its history entry."""

    def probe() -> dict[str, Any] | None:
        for step in get(ns, name)["status"].get("history") or []:
            if step["attempt"] == 1 and step["phase"] in LOSS_OR_FAILURE:
                return dict(step)
        return None

    try:
        return eventually(probe, timeout=timeout, what=f"attempt 1 of {name} lost")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nstatus now: {json.dumps(get(ns, name)['status'], indent=1)[:3000]}"
        ) from None


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "simulator")
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


# ---------------------------------------------------------------- the ways a node is lost


@dataclass(frozen=True)
class Running:
    """A task's running attempt, and what a test needs to take its node away."""

    ns: str
    pod: str
    node: str
    spot: bool
    priority_class: str


@dataclass(frozen=True)
class Loss:
    """A way the cloud takes a node (or the pod on it) away, and how the operator names it."""

    id: str
    reason: str
    #: How long the control plane takes to act on the pod.
    timeout: float
    take: Callable[[Running], None]


def reclaim(node: str) -> None:
    """The cloud's reclaim notice: a NoExecute taint, so the taint manager evicts the pods."""
    kubectl("taint", "node", node, "e2e.simtask.dev/reclaimed=true:NoExecute")


def noexecute_taint(run: Running) -> None:
    reclaim(run.node)


def drain(run: Running) -> None:
    """An admin (or autoscaler) drains the node: cordon, then evict through the Eviction API."""
    kubectl("drain", run.node, f"--timeout={3 * HEADROOM:.0f}s")


def delete_node(run: Running) -> None:
    """The node object is deleted (a cloud VM gone): its attempt is lost at once."""
    kubectl("delete", "node", run.node, "--wait=false")


def graceful_shutdown(run: Running) -> None:
    """Graceful node shutdown: the test plays the kubelet and writes what it writes."""
    pod = kubectl_json("get", "pod", run.pod, "-n", run.ns)
    simulator = pod["status"]["containerStatuses"][0]
    started, now = simulator["state"]["running"]["startedAt"], utc_now()
    status = f"""
status:
  phase: Failed
  reason: Terminated
  message: {SHUTDOWN_MESSAGE}
  conditions:
  - type: DisruptionTarget
    status: "True"
    reason: TerminationByKubelet
    message: {SHUTDOWN_MESSAGE}
    lastTransitionTime: "{now}"
  - {{type: Ready, status: "False", reason: PodFailed, lastTransitionTime: "{now}"}}
  - {{type: ContainersReady, status: "False", reason: PodFailed, lastTransitionTime: "{now}"}}
  containerStatuses:
  - name: simulator
    image: {simulator["image"]}
    imageID: "{simulator.get("imageID", "")}"
    containerID: "{simulator.get("containerID", "")}"
    ready: false
    started: false
    restartCount: 0
    state:
      terminated: {{exitCode: 143, reason: Error, startedAt: "{started}", finishedAt: "{now}"}}
"""
    kubectl("patch", "pod", run.pod, "-n", run.ns, "--subresource=status", "-p", status)


def scheduler_preemption(run: Running) -> None:
    """Higher-priority work wants the whole node: the scheduler preempts the task."""
    tolerations = f"tolerations: [{json.dumps(SPOT_TOLERATION)}]" if run.spot else ""
    urgent = f"""
apiVersion: v1
kind: Pod
metadata:
  name: urgent
  annotations: {{testbed.simtask.dev/duration: 10m}}
spec:
  priorityClassName: {run.priority_class}
  nodeSelector: {{kubernetes.io/hostname: {run.node}}}
  {tolerations}
  containers:
  - name: service
    image: ghcr.io/example/service:1
    resources: {{requests: {{cpu: "{NODE_CPU}"}}}}
"""
    kubectl("apply", "-n", run.ns, "-f", "-", input_text=urgent)


LOSSES = [
    Loss("noexecute-taint", "NodeTainted", HEADROOM, noexecute_taint),
    Loss("drain", "EvictedByAPI", 2 * HEADROOM, drain),
    Loss("node-deleted", "NodeDeleted", HEADROOM, delete_node),
    Loss("graceful-node-shutdown", "NodeShutdown", HEADROOM, graceful_shutdown),
    Loss("scheduler-preemption", "PreemptedByScheduler", 2 * HEADROOM, scheduler_preemption),
]
SPOT_OR_NOT = pytest.mark.parametrize("spot", [True, False], ids=["spot", "on-demand"])


# ---------------------------------------------------------------- stories


@SPOT_OR_NOT
@pytest.mark.parametrize("loss", LOSSES, ids=[loss.id for loss in LOSSES])
def test_lost_node_resubmits_the_task_which_then_succeeds(
    namespace: str, pools: Callable[..., Pool], urgent_priority: str, loss: Loss, spot: bool
) -> None:
    pool = pools(spot=spot)
    task = run_long_task(namespace, "cavity", pool)
    node = task["status"]["nodeName"]
    resume_is_short(namespace, "cavity")

    loss.take(Running(namespace, task["status"]["podName"], node, spot, urgent_priority))

    lost = lost_attempt(namespace, "cavity", timeout=loss.timeout)
    assert (lost["phase"], lost["reason"]) == (LOST[spot], loss.reason), lost
    assert node in lost["message"], lost
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Succeeded",
        f"--timeout={3 * HEADROOM:.0f}s",
        "simtask/cavity",
    )

    task = get(namespace, "cavity")
    status = task["status"]
    assert status["phase"] == "Success"
    assert (status["attempt"], status["resubmissions"]) == (2, 1)
    steps = [(h["phase"], h["attempt"]) for h in status["history"]]
    assert steps == [
        ("Submitted", 1),
        ("Started", 1),
        ("ComputationStarted", 1),
        (LOST[spot], 1),
        ("Submitted", 2),
        ("Started", 2),
        ("ComputationStarted", 2),
        ("ComputationEnded", 2),
        ("Success", 2),
    ], steps
    resubmitted = status["history"][4]
    assert resubmitted["reason"] == "Resubmitted"

    # The lost attempt is on record: where it ran, how it ended, what compute it cost.
    first, second = status["attempts"]
    # The backoff (2 s for the first resubmission) counts from the attempt's end, to the
    # second; the wait for the old pod to go may add to it, never take from it.
    backoff = (parse_time(resubmitted["time"]) - parse_time(first["endTime"])).total_seconds()
    assert 1 <= backoff <= 2 + HEADROOM * 4, f"resubmitted {backoff}s after attempt 1 ended"
    assert (first["attempt"], first["phase"], first["nodeName"], first["machineGroup"]) == (
        1,
        LOST[spot],
        node,
        pool.group,
    )
    start, end = parse_time(first["startTime"]), parse_time(first["endTime"])
    assert start <= end
    assert first["cpuSeconds"] == pytest.approx(2 * (end - start).total_seconds(), abs=0.01)
    assert (second["attempt"], second["phase"], second["machineGroup"]) == (
        2,
        "Success",
        pool.group,
    )
    assert status["nodeName"] in pool.nodes and status["machineGroup"] == pool.group
    if loss.id != "graceful-node-shutdown":  # there the node itself stays healthy
        assert status["nodeName"] != node

    # Attempt 2's simulator is told it resumes after a loss, so it can pick up its checkpoint.
    assert sorted(j["metadata"]["name"] for j in jobs_of(namespace, "cavity")) == [
        "cavity-a1",
        "cavity-a2",
    ]
    second_pods = kubectl_json(
        "get", "pods", "-n", namespace, "-l", "simtask.dev/task=cavity,simtask.dev/attempt=2"
    )["items"]
    assert len(second_pods) == 1
    env = pod_env(second_pods[0])
    assert env["SIMTASK_TASK"] == "cavity"
    assert (env["SIMTASK_ATTEMPT"], env["SIMTASK_PREVIOUS_ATTEMPT_PHASE"]) == ("2", LOST[spot])


@SPOT_OR_NOT
@pytest.mark.parametrize(
    "policy",
    [{"maxResubmissions": 0}, {"resubmitOnPreemption": False}],
    ids=["maxResubmissions-0", "resubmitOnPreemption-false"],
)
def test_a_loss_without_resubmission_ends_the_task(
    namespace: str, pools: Callable[..., Pool], policy: dict[str, Any], spot: bool
) -> None:
    """SpotPreempted on spot, ExecutorTerminated on demand: final when no resubmission
    follows."""
    pool = pools(spot=spot, nodes_count=2)
    task = run_long_task(namespace, "one-shot", pool, **policy)
    node = task["status"]["nodeName"]

    reclaim(node)

    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Failed",
        f"--timeout={3 * HEADROOM:.0f}s",
        "simtask/one-shot",
    )
    task = get(namespace, "one-shot")
    status = task["status"]
    assert status["phase"] == LOST[spot]
    assert (status["attempt"], status.get("resubmissions", 0)) == (1, 0)
    assert history(task) == ["Submitted", "Started", "ComputationStarted", LOST[spot]]
    assert node in status["message"] and "no resubmission" in status["message"]
    assert entry(task, LOST[spot])["reason"] == "NodeTainted"
    assert condition(task, "Succeeded")["status"] == "False"
    assert "nextAttemptTime" not in status
    assert (
        status["attempts"][0]["phase"] == LOST[spot] and status["attempts"][0]["nodeName"] == node
    )
    # No second attempt, and nothing of the lost one keeps running.
    assert "one-shot-a2" not in [j["metadata"]["name"] for j in jobs_of(namespace, "one-shot")]
    eventually(
        lambda: not pods_of(namespace, "one-shot"),
        timeout=2 * HEADROOM,
        what="the lost pod removed",
    )
    # kubectl shows where it ended.
    assert LOST[spot] in kubectl("get", "st", "one-shot", "-n", namespace).stdout


@pytest.mark.parametrize(
    ("after", "lands_on"),
    [(1, "fallback"), (2, "spot")],
    ids=["fallback-after-1", "stays-on-spot-until-2"],
)
def test_fallback_group_takes_over_after_spot_preemptions(
    namespace: str, pools: Callable[..., Pool], after: int, lands_on: str
) -> None:
    spot = pools(spot=True, nodes_count=2)
    on_demand = pools(spot=False, nodes_count=1)
    task = run_long_task(
        namespace,
        "resilient",
        spot,
        fallbackMachineGroup=on_demand.group,
        fallbackAfterPreemptions=after,
    )
    node = task["status"]["nodeName"]
    resume_is_short(namespace, "resilient")

    reclaim(node)

    lost = lost_attempt(namespace, "resilient")
    assert lost["phase"] == "SpotPreempted", lost
    task = wait_phase(namespace, "resilient", "Success")
    status = task["status"]
    assert (status["attempt"], status["resubmissions"]) == (2, 1)
    expected = on_demand if lands_on == "fallback" else spot
    assert status["machineGroup"] == expected.group
    assert status["nodeName"] in expected.nodes
    assert [a["machineGroup"] for a in status["attempts"]] == [spot.group, expected.group]
    second_job = next(
        j for j in jobs_of(namespace, "resilient") if j["metadata"]["name"] == "resilient-a2"
    )
    pod_spec = second_job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == expected.selector
    assert second_job["metadata"]["labels"]["simtask.dev/machine-group"] == expected.group
    spot_tolerated = SPOT_TOLERATION in (pod_spec.get("tolerations") or [])
    assert spot_tolerated is (expected is spot)


@SPOT_OR_NOT
def test_simulator_failure_is_not_a_resubmission(
    namespace: str, pools: Callable[..., Pool], spot: bool
) -> None:
    pool = pools(spot=spot, nodes_count=1)
    apply(
        namespace,
        task_manifest(
            "diverged",
            duration="1s",
            exit_code=3,
            machineGroup=pool.group,
            resources=TASK_RESOURCES,
        ),
    )
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Failed",
        f"--timeout={3 * HEADROOM:.0f}s",
        "simtask/diverged",
    )
    task = get(namespace, "diverged")
    status = task["status"]
    assert (status["phase"], status["exitCode"]) == ("Failed", 3)
    assert (status["attempt"], status.get("resubmissions", 0)) == (1, 0)
    assert history(task) == ["Submitted", "Started", "ComputationStarted", "Failed"]
    assert status["attempts"][0]["phase"] == "Failed" and status["nodeName"] in pool.nodes
    assert [j["metadata"]["name"] for j in jobs_of(namespace, "diverged")] == ["diverged-a1"]
