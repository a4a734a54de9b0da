"""Logs and exec (SPEC §5, §7): `kubectl logs` and `kubectl exec` on the local cluster's
simulated pods, and the log of each attempt the operator keeps after its pod is gone.

What a simulated container prints is a file the test writes (hack/testbed serve_pod_logs);
what `kubectl exec` runs, runs on this machine in a directory standing for the container's
filesystem (serve_pod_exec). Everything else is the real path: kubectl, the API server, the
node's kubelet endpoint (kwok, over TLS checked against the cluster CA).
"""

from __future__ import annotations

import io
import json
import queue
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import (
    KUBECONFIG,
    STATE,
    eventually,
    kubectl,
    kubectl_binary,
    kubectl_json,
    testbed,
)
from tests.e2e.tasks import (
    HEADROOM,
    apply,
    get,
    patch_spec,
    pods_of,
    task_manifest,
    wait_phase,
)

pytestmark = pytest.mark.usefixtures("operator")

DIVERGED = ["reading mesh: 1.2M cells", "step 1 residual 1e-2", "FATAL: solver diverged at t=0.42"]


def configmap(namespace: str, name: str) -> dict[str, Any] | None:
    proc = kubectl("get", "configmap", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_kubectl_logs_shows_what_the_pod_printed_and_follows_it(namespace: str) -> None:
    log = testbed.serve_pod_logs(namespace)
    testbed.append_pod_log(log, DIVERGED[:2])
    apply(namespace, task_manifest("printer", duration="120s"))
    pod = wait_phase(namespace, "printer", "ComputationStarted")["status"]["podName"]

    assert kubectl("logs", "-n", namespace, pod).stdout == "".join(
        line + "\n" for line in DIVERGED[:2]
    )
    assert kubectl("logs", "-n", namespace, "job/printer-a1", "--tail=1").stdout == (
        DIVERGED[1] + "\n"
    )

    follower = subprocess.Popen(
        [kubectl_binary(), "--kubeconfig", str(KUBECONFIG), "logs", "-f", "-n", namespace, pod],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    try:
        assert [lines.get(timeout=HEADROOM) for _ in range(2)] == DIVERGED[:2]
        # A line printed while kubectl follows arrives, without kubectl being run again.
        testbed.append_pod_log(log, ["step 2 residual 4e-3"])
        assert lines.get(timeout=HEADROOM) == "step 2 residual 4e-3"
        assert follower.poll() is None
    finally:
        follower.kill()
        follower.wait(timeout=10)
    patch_spec(namespace, "printer", {"kill": True})
    wait_phase(namespace, "printer", "Killed")


def test_a_failed_attempt_shows_its_tail_and_keeps_its_log_after_its_pod_is_gone(
    namespace: str,
) -> None:
    log = testbed.serve_pod_logs(namespace)
    testbed.append_pod_log(log, DIVERGED)
    # The kubelet would take the message from the log's tail (FallbackToLogsOnError); the
    # simulated one is told it.
    tail = "\n".join(DIVERGED) + "\n"
    apply(
        namespace,
        task_manifest(
            "diverges",
            duration="2s",
            exit_code=3,
            annotations={"testbed.simtask.dev/termination-message": tail},
        ),
    )
    task = wait_phase(namespace, "diverges", "Failed", within=6)
    status = task["status"]
    assert status["reason"] == "NonZeroExit"
    assert status["message"].endswith("FATAL: solver diverged at t=0.42"), status["message"]
    (attempt,) = status["attempts"]
    assert attempt["message"] == status["message"] and attempt["reason"] == "NonZeroExit"

    kept = eventually(
        lambda: configmap(namespace, "diverges-a1-log"),
        timeout=HEADROOM,
        what="the kept log of attempt 1",
    )
    assert kept["data"] == {"log": tail}
    assert kept["metadata"]["labels"] == {
        "simtask.dev/task": "diverges",
        "simtask.dev/task-uid": task["metadata"]["uid"],
        "simtask.dev/attempt": "1",
        "app.kubernetes.io/managed-by": "simtask-operator",
    }
    (owner,) = kept["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "SimulationTask",
        "diverges",
        task["metadata"]["uid"],
    )
    assert "simtask.dev/log-truncated" not in (kept["metadata"].get("annotations") or {})

    # The pod and Job of the attempt go; the kept log stays, as it was.
    kubectl("delete", "job", "diverges-a1", "-n", namespace, "--cascade=foreground", "--wait")
    eventually(lambda: pods_of(namespace, "diverges") == [], timeout=HEADROOM, what="pods gone")
    assert configmap(namespace, "diverges-a1-log") == kept
    assert get(namespace, "diverges")["status"]["phase"] == "Failed"

    # Deleting the task leaves nothing of it behind: the garbage collector removes the log.
    kubectl("delete", "simtask", "diverges", "-n", namespace, "--wait")
    eventually(
        lambda: configmap(namespace, "diverges-a1-log") is None,
        timeout=2 * HEADROOM,
        what="the kept log garbage-collected with its task",
    )


def test_keep_logs_never_keeps_none_and_always_keeps_a_success(namespace: str) -> None:
    log = testbed.serve_pod_logs(namespace)
    testbed.append_pod_log(log, ["converged after 212 steps"])
    apply(namespace, task_manifest("never", duration="2s", exit_code=3, keepLogs="Never"))
    apply(namespace, task_manifest("always", duration="2s", keepLogs="Always"))
    apply(namespace, task_manifest("default-success", duration="2s"))
    # The control: a failure under the default keeps its log, in the same passes as the others.
    apply(namespace, task_manifest("default-failure", duration="2s", exit_code=3))
    for name in ("never", "always", "default-success", "default-failure"):
        wait_phase(namespace, name, "Success", "Failed", within=6)

    for name in ("always", "default-failure"):
        kept = eventually(
            lambda name=name: configmap(namespace, f"{name}-a1-log"),
            timeout=HEADROOM,
            what=f"the kept log of {name}",
        )
        assert kept["data"]["log"] == "converged after 212 steps\n"
    kept_names = {
        cm["metadata"]["name"]
        for cm in kubectl_json(
            "get",
            "configmaps",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/managed-by=simtask-operator",
        )["items"]
    }
    assert kept_names == {"always-a1-log", "default-failure-a1-log"}


# ---------------------------------------------------------------- kubectl exec


@pytest.fixture
def persistent_volume() -> Iterator[str]:
    """The name of a PersistentVolume (cluster-scoped) the test makes; deleted after it."""
    name = f"e2e-outputs-{uuid.uuid4().hex[:6]}"
    yield name
    kubectl("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)


def test_kubectl_exec_runs_in_a_simulated_pod_and_a_reader_pod_streams_a_claim(
    namespace: str, persistent_volume: str
) -> None:
    # The claim's contents: a directory of this machine, standing for the volume.
    volume = STATE / "volumes" / namespace / "results"
    (volume / "fields").mkdir(parents=True)
    (volume / "summary.txt").write_text("drag coefficient 0.0313\n")
    (volume / "fields" / "p.csv").write_bytes(b"x,p\n0,101325\n" * 1000)
    root = testbed.serve_pod_exec(namespace)
    (root / "outputs").symlink_to(volume)

    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": persistent_volume},
        "spec": {
            "storageClassName": "",
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(volume)},
            "claimRef": {"namespace": namespace, "name": "results"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "results"},
        "spec": {
            "storageClassName": "",
            "volumeName": persistent_volume,
            "accessModes": ["ReadOnlyMany"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    kubectl("apply", "-f", "-", input_text=json.dumps(pv))
    kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(claim))
    reader = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "outputs-reader",
            "annotations": {"testbed.simtask.dev/duration": "1h"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "reader",
                    "image": "busybox:1.36",
                    "command": ["sleep", "3600"],
                    "volumeMounts": [
                        {"name": "outputs", "mountPath": "/outputs", "readOnly": True}
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "outputs",
                    "persistentVolumeClaim": {"claimName": "results", "readOnly": True},
                }
            ],
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(reader))
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        f"--timeout={2 * HEADROOM:.0f}s",
        "pod/outputs-reader",
    )

    said = kubectl("exec", "-n", namespace, "outputs-reader", "--", "echo", "hello from the pod")
    assert said.stdout == "hello from the pod\n"
    failed = kubectl("exec", "-n", namespace, "outputs-reader", "--", "false", check=False)
    assert failed.returncode != 0

    # What `kubectl simtask outputs` does: a tar of /outputs, streamed out of the reader pod.
    proc = subprocess.run(
        [
            kubectl_binary(),
            "--kubeconfig",
            str(KUBECONFIG),
            "exec",
            "-n",
            namespace,
            "outputs-reader",
            "--",
            "tar",
            "cf",
            "-",
            "-C",
            "/outputs",
            ".",
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        files = {
            m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    assert files == {
        "summary.txt": b"drag coefficient 0.0313\n",
        "fields/p.csv": b"x,p\n0,101325\n" * 1000,
    }


def test_a_pod_nobody_gave_a_log_answers_as_a_kubelet_would(namespace: str) -> None:
    apply(namespace, task_manifest("silent", duration="120s"))
    pod = wait_phase(namespace, "silent", "ComputationStarted")["status"]["podName"]
    proc = kubectl("logs", "-n", namespace, pod, check=False)
    # Through the API server to the node's kubelet, which says it has no log for it.
    assert proc.returncode != 0 and "no logs found" in proc.stderr, proc.stderr
    patch_spec(namespace, "silent", {"kill": True})
    wait_phase(namespace, "silent", "Killed")
