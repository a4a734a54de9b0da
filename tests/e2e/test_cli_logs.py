"""Logs and outputs through `kubectl simtask` on the local cluster, where kwok's simulated
kubelets serve container logs and run `exec` (SPEC §7).

What is simulated, and how: no container runs on the local cluster, so a test says what
the simulator "printed" by pointing kwok at a file in the CRI log format (a `ClusterLogs`
object for the test's namespace), and what the claim holds by pointing kwok's local `exec`
at a directory (a `ClusterExec` object): `tar` then really runs, on this machine, in that
directory. Everything between is real: the API server's log and exec endpoints, the
node's kubelet endpoint (kwok's), the PersistentVolume binding, the scheduler, the reader
pod, the operator's kept-log ConfigMaps.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import eventually, kubectl, kubectl_json
from tests.e2e.simtask_cli import simtask, start
from tests.e2e.tasks import HEADROOM, apply, get, pods_of, task_manifest, wait_phase

pytestmark = pytest.mark.usefixtures("operator")

KWOK_API = "kwok.x-k8s.io/v1alpha1"
READER_SELECTOR = "app.kubernetes.io/name=simtask-outputs-reader"


def cri_log(lines: list[str]) -> str:
    """`lines` as a container runtime writes them: time, stream, full-line tag, text."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return "".join(f"{now} stdout F {line}\n" for line in lines)


@pytest.fixture
def kwok_objects() -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Create cluster-scoped kwok objects (ClusterLogs, ClusterExec); delete them after."""
    made: list[tuple[str, str]] = []

    def make(kind: str, spec: dict[str, Any]) -> None:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": KWOK_API, "kind": kind, "metadata": {"name": name}, "spec": spec}
        kubectl("apply", "-f", "-", input_text=json.dumps(body))
        made.append((kind.lower(), name))

    yield make
    for kind, name in made:
        kubectl("delete", f"{kind}.kwok.x-k8s.io", name, "--ignore-not-found", "--wait=false")


@pytest.fixture
def printed(
    namespace: str, tmp_path: Path, kwok_objects: Callable[[str, dict[str, Any]], None]
) -> Callable[[list[str]], None]:
    """Make every simulator container of the test's namespace print `lines`."""

    def make(lines: list[str]) -> None:
        path = tmp_path / "simulator.log"
        path.write_text(cri_log(lines))
        kwok_objects(
            "ClusterLogs",
            {
                "selector": {"matchNamespaces": [namespace]},
                "logs": [{"containers": ["simulator"], "logsFile": str(path), "follow": True}],
            },
        )

    return make


LINES = ["solver 2.4 starting", "step 1 residual 1.0e-03", "step 2 residual 1.0e-05"]


def test_kubectl_logs_and_simtask_logs_show_what_the_pod_printed(
    namespace: str, printed: Callable[[list[str]], None]
) -> None:
    printed(LINES)
    apply(namespace, task_manifest("cavity", duration="60s"))
    task = wait_phase(namespace, "cavity", "ComputationStarted")
    pod = task["status"]["podName"]

    plain = kubectl("logs", "-n", namespace, pod, "-c", "simulator")
    assert plain.stdout.splitlines() == LINES

    proc = simtask("logs", "cavity", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == LINES
    proc = simtask("logs", "cavity", "-n", namespace, "--tail", "1")
    assert proc.stdout.splitlines() == LINES[-1:]


def test_logs_follow_shows_the_lines_as_they_come(
    namespace: str, printed: Callable[[list[str]], None]
) -> None:
    printed(LINES)
    apply(namespace, task_manifest("live", duration="60s"))
    # -f before the pod runs: it waits for the attempt to start, then streams.
    proc = start("logs", "live", "-f", "-n", namespace)
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        eventually(lambda: seen[: len(LINES)] == LINES, timeout=5 + HEADROOM, what=f"{LINES}")
    finally:
        proc.terminate()
        proc.wait(timeout=HEADROOM)


def test_the_kept_log_of_a_failed_attempt_outlives_its_pod_and_job(
    namespace: str, printed: Callable[[list[str]], None]
) -> None:
    printed([*LINES, "FATAL: solution diverged"])
    apply(namespace, task_manifest("diverges", duration="2s", exit_code=3))
    task = wait_phase(namespace, "diverges", "Failed", within=6)
    job = task["status"]["attempts"][0]["jobName"]
    kept = eventually(
        lambda: (
            kubectl("get", "configmap", f"{job}-log", "-n", namespace, check=False).returncode == 0
        ),
        timeout=HEADROOM,
        what=f"configmap {job}-log",
    )
    assert kept
    kubectl("delete", "job", job, "-n", namespace, "--cascade=foreground", "--wait=true")
    eventually(lambda: not pods_of(namespace, "diverges"), timeout=HEADROOM, what="pods gone")

    proc = simtask("logs", "diverges", "--attempt", "1", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "FATAL: solution diverged"
    proc = simtask("logs", "diverges", "--attempt", "1", "--tail", "2", "-n", namespace)
    assert proc.stdout.splitlines() == [LINES[-1], "FATAL: solution diverged"]
    assert get(namespace, "diverges")["status"]["phase"] == "Failed"


def bound_claim(namespace: str, name: str, directory: Path) -> str:
    """A PersistentVolumeClaim bound to a hostPath volume at `directory`; returns the PV."""
    pv = f"e2e-{namespace}-{name}"[:63]
    kubectl(
        "apply",
        "-f",
        "-",
        input_text=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(directory)},
                    "claimRef": {"namespace": namespace, "name": name},
                },
            }
        ),
    )
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input_text=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ),
    )
    eventually(
        lambda: (
            kubectl_json("get", "pvc", name, "-n", namespace).get("status", {}).get("phase")
            == "Bound"
        ),
        timeout=HEADROOM,
        what=f"claim {name} bound",
    )
    return pv


def test_outputs_copies_the_claims_files_through_a_reader_pod(
    namespace: str, tmp_path: Path, kwok_objects: Callable[[str, dict[str, Any]], None]
) -> None:
    claim_dir = tmp_path / "claim"
    (claim_dir / "postProcessing").mkdir(parents=True)
    (claim_dir / "log.simpleFoam").write_text("End\n")
    (claim_dir / "postProcessing" / "forces.dat").write_bytes(bytes(range(256)) * 64)
    pv = bound_claim(namespace, "results", claim_dir)
    kwok_objects(
        "ClusterExec",
        {
            "selector": {"matchNamespaces": [namespace]},
            "execs": [{"containers": ["reader"], "local": {"workDir": str(claim_dir)}}],
        },
    )
    try:
        apply(
            namespace,
            task_manifest("cfd", duration="1s", outputs={"persistentVolumeClaim": "results"}),
        )
        wait_phase(namespace, "cfd", "Success", within=6)
        target = tmp_path / "copied"
        proc = simtask("outputs", "cfd", str(target), "-n", namespace)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "2 file(s)" in proc.stdout
        assert (target / "log.simpleFoam").read_text() == "End\n"
        assert (target / "postProcessing" / "forces.dat").read_bytes() == bytes(range(256)) * 64
        assert kubectl_json("get", "pods", "-n", namespace, "-l", READER_SELECTOR)["items"] == []
    finally:
        kubectl("delete", "simtasks", "--all", "-n", namespace, "--wait=true")
        kubectl("delete", "pvc", "results", "-n", namespace, "--wait=false")
        kubectl("delete", "pv", pv, "--wait=false")
