"""Logs and outputs through `kubectl simtask` on the local cluster, where kwok's simulated
kubelets serve container logs and run `exec` (SPEC §7).

What is simulated, and how (the local cluster's helpers, hack/testbed): what a simulator
"prints" is a file in the CRI log format that kwok serves as every container's log in the
test's namespace (`serve_pod_logs`, `append_pod_log`); what `exec` runs, runs on this
machine in a directory standing for the container's filesystem (`serve_pod_exec`), so the
reader pod's `tar -C /outputs` really runs, in `<root>/outputs`. Everything between is
real: the API server's log and exec endpoints, the node's kubelet endpoint (kwok's), the
PersistentVolume binding, the scheduler, the reader pod, the operator's kept-log ConfigMaps.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from tests.e2e.cluster import eventually, kubectl, kubectl_json, testbed
from tests.e2e.simtask_cli import simtask, start
from tests.e2e.tasks import HEADROOM, apply, get, pods_of, task_manifest, wait_phase

pytestmark = pytest.mark.usefixtures("operator")

READER_SELECTOR = "app.kubernetes.io/name=simtask-outputs-reader"


def printed(namespace: str, lines: list[str]) -> Path:
    """Make every container of `namespace` print `lines`; returns the log file to append to."""
    path = Path(testbed.serve_pod_logs(namespace))
    testbed.append_pod_log(path, lines)
    return path


LINES = ["solver 2.4 starting", "step 1 residual 1.0e-03", "step 2 residual 1.0e-05"]


def test_kubectl_logs_and_simtask_logs_show_what_the_pod_printed(namespace: str) -> None:
    printed(namespace, LINES)
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


def test_logs_follow_shows_the_lines_as_they_come(namespace: str) -> None:
    log = printed(namespace, LINES[:2])
    apply(namespace, task_manifest("live", duration="120s"))
    # -f before the simulator runs: it waits for it, then streams.
    proc = start("logs", "live", "-f", "-n", namespace)
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    try:
        eventually(lambda: seen == LINES[:2], timeout=5 + HEADROOM, what=f"{LINES[:2]}")
        testbed.append_pod_log(log, LINES[2:])  # printed while it is followed
        eventually(lambda: seen == LINES, timeout=HEADROOM, what=f"{LINES}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=HEADROOM)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_kept_log_of_a_failed_attempt_outlives_its_pod_and_job(namespace: str) -> None:
    printed(namespace, [*LINES, "FATAL: solution diverged"])
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
        # The PV controller binds on events, or at its next resync (15 s) when it missed one.
        timeout=15 + HEADROOM,
        what=f"claim {name} bound",
    )
    return pv


def test_outputs_copies_the_claims_files_through_a_reader_pod(
    namespace: str, tmp_path: Path
) -> None:
    # The claim's files, as the simulator left them, where the reader's /outputs stands.
    claim_dir = tmp_path / "claim"
    (claim_dir / "postProcessing").mkdir(parents=True)
    (claim_dir / "log.simpleFoam").write_text("End\n")
    (claim_dir / "postProcessing" / "forces.dat").write_bytes(bytes(range(256)) * 64)
    root = Path(testbed.serve_pod_exec(namespace))
    (root / "outputs").symlink_to(claim_dir)
    pv = bound_claim(namespace, "results", claim_dir)
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
