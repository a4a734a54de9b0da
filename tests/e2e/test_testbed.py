"""The local cluster is a real Kubernetes: scheduling, Jobs, container states, disruptions,
graceful termination, nodes that vanish; and the black-hole proxy that fault tests put in front
of it."""

from __future__ import annotations

import os
import queue
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from kubernetes import client, watch

from tests.e2e.cluster import (
    KUBECONFIG,
    ROOT,
    STATE,
    condition,
    eventually,
    kubectl,
    kubectl_binary,
    kubectl_json,
    testbed,
)
from tests.e2e.proxy import BlackholeProxy, write_proxied_kubeconfig
from tests.e2e.tasks import GPU_TOLERATION, HEADROOM, SPOT_TOLERATION


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
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    ns: str,
    name: str,
    node: str,
    duration: str = "10m",
) -> Any:
    batch.create_namespaced_job(
        ns,
        job(
            name,
            tolerations=[SPOT_TOLERATION],
            node_selector={"kubernetes.io/hostname": node},
            annotations={"testbed.simtask.dev/duration": duration},
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


def pod_events(
    core: client.CoreV1Api, ns: str, name: str, resource_version: str, timeout: float
) -> Iterator[tuple[float, str, Any]]:
    """Every change of one pod from `resource_version` on, as (monotonic time, type, pod),
    until it is deleted or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    w = watch.Watch()
    try:
        for event in w.stream(
            core.list_namespaced_pod,
            ns,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=max(1, int(timeout)),
            _request_timeout=timeout + 10,
        ):
            yield time.monotonic(), event["type"], event["object"]
            if event["type"] == "DELETED" or time.monotonic() > deadline:
                return
    finally:
        w.stop()


def test_pods_of_a_deleted_node_stay_as_they_were_until_pod_gc(
    namespace: str, own_node: str, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    # The run would end by itself 5s after it started: nothing may report that once its
    # node is gone.
    pod = running_pod_on(core, batch, namespace, "node-gone", own_node, duration="5s")
    core.delete_node(own_node)
    phases: list[str] = []
    disrupted = None
    # Pod GC fails the pods of a node that is gone 40s after it first saw the node missing,
    # and it looks every 20s: up to some 80s.
    for _, kind, obj in pod_events(
        core, namespace, pod.metadata.name, pod.metadata.resource_version, timeout=120
    ):
        phases.append(f"{kind} {obj.status.phase}")
        assert obj.status.phase != "Succeeded", phases
        cond = pod_condition(obj, "DisruptionTarget")
        if cond and cond.status == "True":
            disrupted = disrupted or (cond, obj)
        elif obj.status.phase == "Running":
            # As it was: its container still running, as last reported.
            assert obj.status.container_statuses[0].state.running, obj.status
    assert disrupted, f"pod GC did not fail the pod; seen: {phases}"
    cond, obj = disrupted
    assert cond.reason == "DeletionByPodGC"
    assert obj.status.phase == "Failed"
    eventually(
        lambda: job_condition(batch, namespace, "node-gone", "Failed"),
        timeout=60,
        what="Job Failed",
    )
    assert not job_condition(batch, namespace, "node-gone", "Complete")


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


def running_pod(
    core: client.CoreV1Api, ns: str, name: str, stop_delay: str, grace: int | None = None
) -> Any:
    """A bare pod whose simulated simulator runs 10 minutes and takes `stop_delay` to exit
    on SIGTERM."""
    spec: dict[str, Any] = {
        "containers": [{"name": "simulator", "image": "ghcr.io/example/solver:1.0"}]
    }
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    core.create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "annotations": {
                    "testbed.simtask.dev/duration": "10m",
                    "testbed.simtask.dev/stop-delay": stop_delay,
                },
            },
            "spec": spec,
        },
    )
    return eventually(
        lambda: (p := core.read_namespaced_pod(name, ns)).status.phase == "Running" and p,
        timeout=60,
        what=f"{name} Running",
    )


def delete_and_watch_it_stop(core: client.CoreV1Api, ns: str, pod: Any) -> tuple[float, Any]:
    """Delete the pod with its own grace period; return how many seconds its containers kept
    running, and the pod as it was once they had stopped. The pod must stay Running until
    then, and be removed after."""
    name = pod.metadata.name
    t0 = time.monotonic()
    core.delete_namespaced_pod(name, ns)
    events = list(pod_events(core, ns, name, pod.metadata.resource_version, timeout=60))
    seen = [(round(t - t0, 1), kind, obj.status.phase) for t, kind, obj in events]
    stopped = next(((t, obj) for t, _, obj in events if obj.status.phase == "Failed"), None)
    assert stopped, f"containers never stopped; seen: {seen}"
    for t, _, obj in events:
        if t >= stopped[0]:
            break
        assert obj.metadata.deletion_timestamp and obj.status.phase == "Running", seen
        assert obj.status.container_statuses[0].state.running, seen
    assert events[-1][1] == "DELETED", f"pod not removed; seen: {seen}"
    return stopped[0] - t0, stopped[1]


def test_deleted_pod_runs_until_its_simulator_exits_on_sigterm(
    namespace: str, core: client.CoreV1Api
) -> None:
    pod = running_pod(core, namespace, "slow-stop", stop_delay="5s")
    ran, stopped = delete_and_watch_it_stop(core, namespace, pod)
    # Within the default grace period (30s): SIGTERM, and the simulator exits 5s later.
    assert 4.5 <= ran <= 9, ran
    term = stopped.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (143, "Error")


def test_grace_period_caps_the_stop_with_sigkill(namespace: str, core: client.CoreV1Api) -> None:
    pod = running_pod(core, namespace, "stubborn", stop_delay="60s", grace=3)
    ran, stopped = delete_and_watch_it_stop(core, namespace, pod)
    assert 2.5 <= ran <= 8, ran
    term = stopped.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (137, "Error")


def gated_pod(name: str) -> dict[str, Any]:
    """A pod that nobody touches after its creation: a scheduling gate holds it Pending."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "schedulingGates": [{"name": "testbed.simtask.dev/hold"}],
            "containers": [{"name": "simulator", "image": "ghcr.io/example/solver:1.0"}],
        },
    }


def read_lines(stream: IO[str] | None, into: queue.Queue[str]) -> None:
    for line in stream or []:
        into.put(line.strip())


def test_blackholed_proxy_silences_a_watch_but_not_new_connections(
    namespace: str, core: client.CoreV1Api, tmp_path: Path
) -> None:
    with BlackholeProxy() as proxy:
        config = write_proxied_kubeconfig(KUBECONFIG, proxy.port, tmp_path / "kubeconfig")
        # TLS passes through: the API server's own certificate is valid for 127.0.0.1.
        tls = ssl.create_default_context(cafile=str(STATE / "pki" / "ca.crt"))
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw,
            tls.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            assert conn.getpeercert()

        def through_proxy(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [kubectl_binary(), "--kubeconfig", str(config), "-n", namespace, *args],
                capture_output=True,
                text=True,
                timeout=30,
            )

        core.create_namespaced_pod(namespace, gated_pod("before"))
        watcher = subprocess.Popen(
            [
                kubectl_binary(),
                "--kubeconfig",
                str(config),
                "-n",
                namespace,
                "get",
                "pods",
                "--watch",
                "-o",
                "name",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=read_lines, args=(watcher.stdout, lines), daemon=True).start()
        try:
            assert lines.get(timeout=30) == "pod/before"
            core.create_namespaced_pod(namespace, gated_pod("seen"))
            assert lines.get(timeout=30) == "pod/seen"

            proxy.blackhole()
            core.create_namespaced_pod(namespace, gated_pod("after"))
            accepted = proxy.accepted
            fresh = through_proxy("get", "pod", "after", "-o", "name")
            assert (fresh.returncode, fresh.stdout.strip()) == (0, "pod/after"), fresh.stderr
            assert proxy.accepted > accepted
            # The watch hears nothing, yet its connection is open: kubectl still waits.
            with pytest.raises(queue.Empty):
                lines.get(timeout=3)
            assert watcher.poll() is None

            proxy.heal()
            assert lines.get(timeout=30) == "pod/after"
        finally:
            watcher.kill()
            watcher.wait(timeout=10)


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


def test_a_missing_secret_volume_keeps_the_pod_creating_until_it_exists(
    namespace: str, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    """As a kubelet does: no container starts while a Secret or ConfigMap volume cannot be
    mounted; a FailedMount event says which; the pod runs once the object exists."""
    spec = job("mounts", annotations={"testbed.simtask.dev/duration": "1s"})
    pod_spec = spec["spec"]["template"]["spec"]
    pod_spec["volumes"] = [
        {"name": "input-key", "secret": {"secretName": "solver-key"}},
        {"name": "input-mesh", "configMap": {"name": "mesh"}},
        {"name": "input-extra", "secret": {"secretName": "nowhere", "optional": True}},
    ]
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="mesh"))
    )
    batch.create_namespaced_job(namespace, spec)

    def failed_mount() -> Any:
        events = core.list_namespaced_event(
            namespace, field_selector="reason=FailedMount,involvedObject.kind=Pod"
        ).items
        return events[0] if events else None

    event = eventually(failed_mount, timeout=HEADROOM, what="a FailedMount event")
    assert event.type == "Warning" and event.source.component == "kubelet"
    assert event.message == (
        'MountVolume.SetUp failed for volume "input-key" : secret "solver-key" not found'
    )

    def creating() -> Any:
        pod = job_pod(core, namespace, "mounts")
        statuses = pod.status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return pod if waiting and waiting.reason == "ContainerCreating" else None

    pod = eventually(creating, timeout=HEADROOM, what="the pod in ContainerCreating")
    assert pod.status.phase == "Pending"
    # Still creating a while later: nothing runs while the Secret is missing (the next
    # retries of the mount count on the same event).
    eventually(lambda: (failed_mount().count or 0) >= 2, timeout=HEADROOM, what="a retried mount")
    assert job_pod(core, namespace, "mounts").status.phase == "Pending"

    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="solver-key"), string_data={"k": "v"}),
    )
    eventually(
        lambda: job_condition(batch, namespace, "mounts", "Complete"),
        timeout=HEADROOM,
        what="the Job to complete once the Secret exists",
    )
