"""MachineGroups: placement, status, quota queueing, and what ending a group does to its tasks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.cluster import condition, eventually, kubectl, kubectl_json
from tests.e2e.tasks import (
    GPU_TOLERATION,
    HEADROOM,
    SPOT_TOLERATION,
    apply,
    get,
    history,
    jobs_of,
    task_manifest,
    wait_phase,
)

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def machine_group() -> Iterator[Callable[..., str]]:
    """Make cluster-scoped MachineGroups for one test; delete them after it."""
    made: list[str] = []

    def make(pool: str, **spec: Any) -> str:
        name = f"{pool}-{uuid.uuid4().hex[:6]}"
        body = {"nodeSelector": {"cloud.google.com/gke-nodepool": pool}, **spec}
        kubectl(
            "apply",
            "-f",
            "-",
            input_text=json.dumps(
                {
                    "apiVersion": "simtask.dev/v1alpha1",
                    "kind": "MachineGroup",
                    "metadata": {"name": name},
                    "spec": body,
                }
            ),
        )
        made.append(name)
        eventually(
            lambda: group(name).get("status", {}).get("phase"),
            timeout=HEADROOM,
            what=f"{name} status",
        )
        return name

    yield make
    for name in made:
        kubectl("delete", "machinegroup", name, "--ignore-not-found", "--wait=false")


def group(name: str) -> dict[str, Any]:
    return dict(kubectl_json("get", "machinegroup", name))


def unfinished_jobs(ns: str) -> int:
    jobs = kubectl_json("get", "jobs", "-n", ns)["items"]
    return sum(
        1
        for j in jobs
        if not any(
            c["type"] in ("Complete", "Failed") and c["status"] == "True"
            for c in j.get("status", {}).get("conditions", [])
        )
    )


def test_group_status_shows_nodes_gpus_and_spot(machine_group: Callable[..., str]) -> None:
    gpu = machine_group("gpu-a100", tolerations=[GPU_TOLERATION])
    spot = machine_group("cpu-spot", tolerations=[SPOT_TOLERATION])
    status = eventually(
        lambda: (s := group(gpu)["status"]).get("nodes") == 2 and s, timeout=HEADROOM
    )
    assert (status["phase"], status["gpus"], status["spot"]) == ("Active", 8, False)
    assert condition(group(gpu), "Ready")["status"] == "True"
    assert eventually(lambda: group(spot)["status"].get("spot"), timeout=HEADROOM) is True
    out = kubectl("get", "mg", gpu).stdout
    assert "Active" in out and "8" in out


def test_gpu_task_lands_on_its_group(namespace: str, machine_group: Callable[..., str]) -> None:
    gpu = machine_group("gpu-a100", tolerations=[GPU_TOLERATION])
    apply(
        namespace,
        task_manifest("md", machineGroup=gpu, resources={"cpu": "4", "memory": "16Gi", "gpu": 2}),
    )
    task = wait_phase(namespace, "md", "Success")
    assert task["status"]["nodeName"].startswith("gpu-a100-")
    assert task["status"]["machineGroup"] == gpu
    pod_spec = jobs_of(namespace, "md")[0]["spec"]["template"]["spec"]
    resources = pod_spec["containers"][0]["resources"]
    assert (
        resources["limits"]["nvidia.com/gpu"] == "2"
        and resources["requests"]["nvidia.com/gpu"] == "2"
    )
    assert GPU_TOLERATION.items() <= pod_spec["tolerations"][0].items()
    assert pod_spec["nodeSelector"]["cloud.google.com/gke-nodepool"] == "gpu-a100"


def test_task_that_can_never_fit_stays_submitted_saying_why(
    namespace: str, machine_group: Callable[..., str]
) -> None:
    gpu = machine_group("gpu-a100", tolerations=[GPU_TOLERATION])
    apply(namespace, task_manifest("huge", machineGroup=gpu, resources={"gpu": 8}))
    task = eventually(
        lambda: (
            (t := get(namespace, "huge")).get("status", {}).get("reason") == "Unplaceable" and t
        ),
        timeout=HEADROOM,
        what="Unplaceable",
    )
    assert task["status"]["phase"] == "Submitted"
    assert "8 GPUs" in task["status"]["message"] and "has 4" in task["status"]["message"]
    assert not jobs_of(namespace, "huge")


def test_quota_queues_fifo_and_never_exceeds_it(
    namespace: str, machine_group: Callable[..., str]
) -> None:
    name = machine_group("cpu-standard", maxConcurrentTasks=2)
    for i in range(5):
        apply(namespace, task_manifest(f"q-{i}", duration="8s", machineGroup=name))
    positions: dict[str, int] = {}
    most = 0

    def all_done() -> bool:
        nonlocal most
        most = max(most, unfinished_jobs(namespace))
        for i in range(5):
            pos = (get(namespace, f"q-{i}").get("status") or {}).get("queuePosition")
            if pos is not None:
                positions.setdefault(f"q-{i}", pos)
        phases = [(get(namespace, f"q-{i}").get("status") or {}).get("phase") for i in range(5)]
        return all(p == "Success" for p in phases)

    eventually(all_done, timeout=4 * HEADROOM, interval=0.3, what="all five Success")
    assert most <= 2, f"{most} Jobs ran at once with maxConcurrentTasks 2"
    # The first two start at once; the others waited at 1, 2, 3 in creation order.
    assert positions.get("q-2") == 1 and positions.get("q-3") == 2 and positions.get("q-4") == 3, (
        positions
    )
    assert "q-0" not in positions and "q-1" not in positions


def running_and_queued(namespace: str, machine_group: Callable[..., str]) -> str:
    """A group with room for one task: "running" runs on it, "queued" waits at position 1."""
    name = machine_group("cpu-standard", maxConcurrentTasks=1)
    apply(namespace, task_manifest("running", duration="10m", machineGroup=name))
    wait_phase(namespace, "running", "ComputationStarted")
    apply(namespace, task_manifest("queued", duration="10m", machineGroup=name))
    eventually(
        lambda: get(namespace, "queued").get("status", {}).get("queuePosition") == 1,
        timeout=HEADROOM,
    )
    return name


def test_terminating_a_group_stops_running_and_queued_tasks(
    namespace: str, machine_group: Callable[..., str]
) -> None:
    name = running_and_queued(namespace, machine_group)
    kubectl("patch", "machinegroup", name, "--type=merge", "-p", '{"spec":{"terminate":true}}')
    running = wait_phase(namespace, "running", "ExecutorTerminatedByUser")
    queued = wait_phase(namespace, "queued", "Zombie")
    assert name in running["status"]["message"] and name in queued["status"]["message"]
    assert condition(running, "Failed")["status"] == "True"
    eventually(lambda: group(name)["status"]["phase"] == "Terminated", timeout=HEADROOM)
    eventually(
        lambda: unfinished_jobs(namespace) == 0, timeout=2 * HEADROOM, what="no Job left running"
    )


def test_expired_group_stops_its_running_task(
    namespace: str, machine_group: Callable[..., str]
) -> None:
    name = machine_group("cpu-standard", timeToLive="8s")
    apply(namespace, task_manifest("outlived", duration="10m", machineGroup=name))
    wait_phase(namespace, "outlived", "ComputationStarted")
    task = wait_phase(namespace, "outlived", "ExecutorTerminatedTTLExceeded", timeout=2 * HEADROOM)
    assert history(task)[-1] == "ExecutorTerminatedTTLExceeded"
    assert group(name)["status"]["phase"] == "Expired"
    apply(namespace, task_manifest("late", machineGroup=name))
    assert wait_phase(namespace, "late", "Zombie")["status"]["reason"] == "MachineGroupExpired"
    eventually(
        lambda: unfinished_jobs(namespace) == 0, timeout=2 * HEADROOM, what="no Job left running"
    )


def test_deleting_a_group_stops_its_tasks_then_goes(
    namespace: str, machine_group: Callable[..., str]
) -> None:
    name = running_and_queued(namespace, machine_group)
    kubectl("delete", "machinegroup", name, "--wait=false")
    assert (
        wait_phase(namespace, "running", "ExecutorTerminatedByUser")["status"]["reason"]
        == "MachineGroupDeleted"
    )
    assert wait_phase(namespace, "queued", "Zombie")["status"]["reason"] == "MachineGroupDeleted"
    eventually(
        lambda: kubectl("get", "machinegroup", name, check=False).returncode != 0,
        timeout=2 * HEADROOM,
        what="group gone once its tasks stopped",
    )
    eventually(
        lambda: unfinished_jobs(namespace) == 0, timeout=2 * HEADROOM, what="no Job left running"
    )
