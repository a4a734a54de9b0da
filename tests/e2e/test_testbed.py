"""The local cluster is a real Kubernetes: scheduling, Jobs, container states, disruptions."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.cluster import ROOT, condition, eventually, kubectl, kubectl_json, testbed
from tests.e2e.tasks import GPU_TOLERATION, SPOT_TOLERATION


def job(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    gpus: int = 0,
    tolerations: list[dict[str, str]] | None = None,
    node_selector: dict[str, str] | None = None,
    init: bool = False,
    deadline: int | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "500m", "memory": "256Mi"}}
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {"name": "simulator", "image": "ghcr.io/example/solver:1.0", "resources": resources}
        ],
        "tolerations": tolerations or [],
        "nodeSelector": node_selector or {},
    }
    if init:
        pod_spec["initContainers"] = [{"name": "stage-inputs", "image": "busybox:1.36"}]
    if deadline:
        pod_spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "podReplacementPolicy": "Failed",
            "template": {"metadata": {"annotations": annotations or {}}, "spec": pod_spec},
        },
    }


def job_pod(core: client.CoreV1Api, ns: str, name: str) -> Any:
    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items
    return pods[0] if pods else None


def job_condition(batch: client.BatchV1Api, ns: str, name: str, ctype: str) -> Any:
    for c in batch.read_namespaced_job_status(name, ns).status.conditions or []:
        if c.type == ctype and c.status == "True":
            return c
    return None


def pod_condition(pod: Any, ctype: str) -> Any:
    for c in (pod.status.conditions or []) if pod else []:
        if c.type == ctype:
            return c
    return None


@pytest.fixture
def own_node(core: client.CoreV1Api) -> Iterator[str]:
    """A spot node of the test's own, so disrupting it disturbs no other test."""
    name = f"e2e-spot-{uuid.uuid4().hex[:6]}"
    node = testbed.fake_node(
        name,
        "cpu-spot",
        labels={"cloud.google.com/gke-spot": "true"},
        taints=[{"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NoSchedule"}],
    )
    core.create_node(node)
    eventually(
        lambda: condition(kubectl_json("get", "node", name), "Ready") or None,
        timeout=30,
        what=f"node {name} Ready",
    )
    eventually(
        lambda: (
            (condition(kubectl_json("get", "node", name), "Ready") or {}).get("status") == "True"
        ),
        timeout=30,
        what=f"node {name} Ready=True",
    )
    yield name
    kubectl("delete", "node", name, "--ignore-not-found", "--wait=false")


def test_gpu_job_lands_on_gpu_pool_and_completes(
    namespace: str, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(
        namespace,
        job(
            "gpu",
            gpus=2,
            tolerations=[GPU_TOLERATION],
            init=True,
            annotations={"testbed.simtask.dev/duration": "2s"},
        ),
    )
    eventually(
        lambda: job_condition(batch, namespace, "gpu", "Complete"), timeout=60, what="Job Complete"
    )
    pod = job_pod(core, namespace, "gpu")
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["cloud.google.com/gke-nodepool"] == "gpu-a100"
    assert pod.status.phase == "Succeeded"
    init = pod.status.init_container_statuses[0].state.terminated
    assert init.reason == "Completed" and init.exit_code == 0
    main = pod.status.container_statuses[0].state.terminated
    assert (main.exit_code, main.reason) == (0, "Completed")
    assert init.finished_at <= main.started_at < main.finished_at
    # The simulated run honours its duration (2s), as a kubelet-reported interval.
    assert (main.finished_at - main.started_at).total_seconds() >= 1.5
    assert pod_condition(pod, "PodScheduled").status == "True"
    assert pod.status.host_ip and pod.status.pod_ip and pod.status.start_time


def test_exit_code_fails_pod_and_job(
    namespace: str, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(
        namespace,
        job(
            "exit3",
            annotations={
                "testbed.simtask.dev/duration": "1s",
                "testbed.simtask.dev/exit-code": "3",
            },
        ),
    )
    eventually(
        lambda: job_condition(batch, namespace, "exit3", "Failed"), timeout=60, what="Job Failed"
    )
    pod = job_pod(core, namespace, "exit3")
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")


def test_pod_asking_for_too_many_gpus_is_unschedulable(
    namespace: str, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nine-gpus"},
            "spec": {
                "tolerations": [GPU_TOLERATION],
                "containers": [
                    {
                        "name": "simulator",
                        "image": "solver",
                        "resources": {
                            "requests": {"nvidia.com/gpu": "9"},
                            "limits": {"nvidia.com/gpu": "9"},
                        },
                    }
                ],
            },
        },
    )

    def unschedulable() -> Any:
        cond = pod_condition(core.read_namespaced_pod("nine-gpus", namespace), "PodScheduled")
        return cond if cond and cond.status == "False" else None

    cond = eventually(unschedulable, timeout=30, what="PodScheduled=False")
    assert cond.reason == "Unschedulable"
    assert "nvidia.com/gpu" in cond.message
    assert core.read_namespaced_pod("nine-gpus", namespace).status.phase == "Pending"


def test_active_deadline_fails_pod_with_deadline_exceeded(
    namespace: str, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job(
        namespace, job("deadline", deadline=2, annotations={"testbed.simtask.dev/duration": "5m"})
    )
    pod = eventually(
        lambda: (p := job_pod(core, namespace, "deadline")) and p.status.phase == "Failed" and p,
        timeout=60,
        what="pod Failed",
    )
    assert pod.status.reason == "DeadlineExceeded"
    assert job_condition(batch, namespace, "deadline", "Failed") or eventually(
        lambda: job_condition(batch, namespace, "deadline", "Failed"), timeout=30
    )


def running_pod_on(
    core: client.CoreV1Api, batch: client.BatchV1Api, ns: str, name: str, node: str
) -> Any:
    batch.create_namespaced_job(
        ns,
        job(
            name,
            tolerations=[SPOT_TOLERATION],
            node_selector={"kubernetes.io/hostname": node},
            annotations={"testbed.simtask.dev/duration": "10m"},
        ),
    )
    return eventually(
        lambda: (p := job_pod(core, ns, name)) and p.status.phase == "Running" and p,
        timeout=60,
        what=f"{name} Running on {node}",
    )


def wait_disrupted(core: client.CoreV1Api, ns: str, pod_name: str, timeout: float = 60) -> Any:
    def disrupted() -> Any:
        try:
            pod = core.read_namespaced_pod(pod_name, ns)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        cond = pod_condition(pod, "DisruptionTarget")
        return cond if cond and cond.status == "True" else None

    return eventually(disrupted, timeout=timeout, what=f"DisruptionTarget on {pod_name}")


def test_noexecute_taint_disrupts_spot_pod(
    namespace: str, own_node: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    pod = running_pod_on(core, batch, namespace, "reclaimed", own_node)
    core.patch_node(
        own_node,
        {
            "spec": {
                "taints": [
                    {"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NoSchedule"},
                    {
                        "key": "testbed.simtask.dev/reclaimed",
                        "value": "true",
                        "effect": "NoExecute",
                    },
                ]
            }
        },
    )
    cond = wait_disrupted(core, namespace, pod.metadata.name)
    assert cond.reason == "DeletionByTaintManager"
    eventually(
        lambda: job_condition(batch, namespace, "reclaimed", "Failed"),
        timeout=60,
        what="Job Failed",
    )


def test_eviction_api_disrupts_pod(
    namespace: str, own_node: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    pod = running_pod_on(core, batch, namespace, "drained", own_node)
    core.create_namespaced_pod_eviction(
        pod.metadata.name,
        namespace,
        client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=namespace)
        ),
    )
    cond = wait_disrupted(core, namespace, pod.metadata.name)
    assert cond.reason == "EvictionByEvictionAPI"
    # The simulated kubelet stops the container as a real one does on SIGTERM.
    stopped = eventually(
        lambda: (
            (p := job_pod(core, namespace, "drained")) is None
            or (p.status.phase == "Failed" and p)
            or None
        ),
        timeout=60,
        what="pod stopped",
    )
    if stopped is not True:
        assert stopped.status.container_statuses[0].state.terminated.exit_code == 143
    eventually(
        lambda: job_condition(batch, namespace, "drained", "Failed"), timeout=60, what="Job Failed"
    )


def test_deleted_node_has_its_pods_failed_by_pod_gc(
    namespace: str, own_node: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    pod = running_pod_on(core, batch, namespace, "node-gone", own_node)
    core.delete_node(own_node)
    # Pod GC waits out its quarantine (40s) before it fails pods of a node that is gone.
    cond = wait_disrupted(core, namespace, pod.metadata.name, timeout=120)
    assert cond.reason == "DeletionByPodGC"
    eventually(
        lambda: job_condition(batch, namespace, "node-gone", "Failed"),
        timeout=60,
        what="Job Failed",
    )


def test_deleting_a_running_pod_stops_it(
    namespace: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(
        namespace, job("deleted", annotations={"testbed.simtask.dev/duration": "10m"})
    )
    pod = eventually(
        lambda: (p := job_pod(core, namespace, "deleted")) and p.status.phase == "Running" and p,
        timeout=60,
        what="Running",
    )
    started: datetime = pod.status.container_statuses[0].state.running.started_at
    core.delete_namespaced_pod(pod.metadata.name, namespace)
    eventually(
        lambda: job_condition(batch, namespace, "deleted", "Failed"), timeout=60, what="Job Failed"
    )
    eventually(lambda: job_pod(core, namespace, "deleted") is None, timeout=60, what="pod removed")
    assert started is not None


def test_up_again_is_a_quick_no_op(cluster: str) -> None:
    proc = subprocess.run(
        [str(ROOT / "hack" / "testbed"), "up"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == cluster and "already running" in proc.stderr


def test_up_fails_fast_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = dict(
            os.environ,
            TESTBED_DIR=str(tmp_path),
            TESTBED_APISERVER_PORT=str(port),
            TESTBED_ETCD_PORT="0",
            TESTBED_CM_PORT="0",
            TESTBED_SCHEDULER_PORT="0",
            TESTBED_KWOK_PORT="0",
        )
        proc = subprocess.run(
            [str(ROOT / "hack" / "testbed"), "up"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert proc.returncode == 1
    assert f"kube-apiserver 127.0.0.1:{port}" in proc.stderr and "in use" in proc.stderr
    assert not list((tmp_path / "pids").glob("*.pid"))  # nothing left running
