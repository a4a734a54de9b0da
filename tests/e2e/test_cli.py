"""`kubectl simtask` on the local cluster, through the real API server: submit and wait
with SPEC §8's exit codes, retry without lost updates, history, queue, kill/hold/release,
and clear errors for bad input and missing permissions."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import STATE, eventually, kubectl, kubectl_json
from tests.e2e.simtask_cli import manifest_file, simtask, start
from tests.e2e.tasks import HEADROOM, apply, get, history, task_manifest, wait_phase
from tests.e2e.test_machinegroups import machine_group  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("operator")


def phases_printed(stdout: str, name: str) -> list[str]:
    """The phases of the status lines `wait` printed for `name`, in order."""
    found = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == f"simtask/{name}":
            found.append(parts[2])
    return found


def test_submit_wait_of_a_task_that_succeeds_exits_0_printing_each_change_once(
    namespace: str,
) -> None:
    path = manifest_file(task_manifest("ok", duration="2s"))
    proc = simtask("submit", path, "-n", namespace, "--wait", "--timeout", f"{4 + HEADROOM}s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "simtask/ok created" in proc.stdout
    # Every transition the operator recorded, each printed once, in order.
    assert phases_printed(proc.stdout, "ok") == history(get(namespace, "ok")), proc.stdout
    assert phases_printed(proc.stdout, "ok")[-1] == "Success"


def test_submit_wait_of_a_task_that_exits_3_exits_1(namespace: str) -> None:
    path = manifest_file(task_manifest("three", duration="1s", exit_code=3))
    proc = simtask("submit", path, "-n", namespace, "--wait", "--timeout", f"{4 + HEADROOM}s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert phases_printed(proc.stdout, "three")[-1] == "Failed"
    assert get(namespace, "three")["status"]["exitCode"] == 3


def test_submit_with_generate_name_makes_a_new_task_each_time(namespace: str) -> None:
    doc = task_manifest("unused", duration="1s")
    doc["metadata"] = {"generateName": "sweep-"}
    path = manifest_file(doc)
    first = simtask("submit", path, "-n", namespace, "-o", "json")
    second = simtask("submit", path, "-n", namespace, "-o", "json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    names = {json.loads(p.stdout)["metadata"]["name"] for p in (first, second)}
    assert len(names) == 2 and all(n.startswith("sweep-") for n in names)


def test_wait_with_a_timeout_on_a_long_task_exits_124_in_time(namespace: str) -> None:
    apply(namespace, task_manifest("long", duration="10m"))
    wait_phase(namespace, "long", "ComputationStarted")
    began = time.monotonic()
    proc = simtask("wait", "long", "-n", namespace, "--timeout", "2s")
    took = time.monotonic() - began
    assert proc.returncode == 124, proc.stdout + proc.stderr
    assert 2 <= took < 2 + HEADROOM, took
    # It printed where the task stood, and left it running.
    assert phases_printed(proc.stdout, "long") == ["ComputationStarted"]
    assert get(namespace, "long")["status"]["phase"] == "ComputationStarted"


def test_wait_on_several_tasks_exits_1_when_one_fails(namespace: str) -> None:
    apply(namespace, task_manifest("good", duration="1s"))
    apply(namespace, task_manifest("bad", duration="2s", exit_code=2))
    proc = simtask("wait", "good", "bad", "-n", namespace, "--timeout", f"{5 + HEADROOM}s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert get(namespace, "good")["status"]["phase"] == "Success"


def test_retry_from_two_processes_at_once_raises_the_counter_by_two(namespace: str) -> None:
    apply(namespace, task_manifest("flaky", duration="1s", exit_code=1))
    wait_phase(namespace, "flaky", "Failed")
    procs = [start("retry", "flaky", "-n", namespace) for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert get(namespace, "flaky")["spec"]["retry"] == 2
    # The operator honours the raised counter with a new attempt.
    eventually(
        lambda: (get(namespace, "flaky").get("status") or {}).get("attempt", 1) >= 2,
        timeout=HEADROOM,
        what="a second attempt",
    )


def test_history_shows_transitions_attempts_and_compute(namespace: str) -> None:
    apply(namespace, task_manifest("done", duration="2s"))
    task = wait_phase(namespace, "done", "Success", within=6)
    human = simtask("history", "done", "-n", namespace)
    assert human.returncode == 0, human.stderr
    for phase in history(task):
        assert phase in human.stdout
    assert "simtask/done  Success  attempt 1" in human.stdout
    assert "compute:" in human.stdout and "CPU-s" in human.stdout
    machine = simtask("history", "done", "-n", namespace, "-o", "json")
    data = json.loads(machine.stdout)
    assert data["history"] == task["status"]["history"]
    assert data["attempts"] == task["status"]["attempts"]


def test_queue_lists_the_waiting_tasks_in_order(
    namespace: str,
    machine_group: Callable[..., str],  # noqa: F811 - the fixture imported above
) -> None:
    group = machine_group("cpu-standard", maxConcurrentTasks=1)
    for name in ("first", "second", "third"):
        apply(namespace, task_manifest(name, duration="10m", machineGroup=group))
        if name == "first":
            wait_phase(namespace, "first", "Started", "ComputationStarted")

    def positions() -> list[Any] | None:
        found = [
            (get(namespace, n).get("status") or {}).get("queuePosition")
            for n in ("second", "third")
        ]
        return found if found == [1, 2] else None

    eventually(positions, timeout=HEADROOM, what="queue positions 1 and 2")
    proc = simtask("queue", group, "-n", namespace, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert [t["metadata"]["name"] for t in json.loads(proc.stdout)] == ["second", "third"]
    human = simtask("queue", group, "-n", namespace)
    lines = [line.split() for line in human.stdout.splitlines()[1:]]
    assert [(row[1], row[3]) for row in lines] == [("1", "second"), ("2", "third")], human.stdout
    kubectl("delete", "simtasks", "--all", "-n", namespace, "--wait=false")


def test_hold_release_and_kill(namespace: str) -> None:
    held = task_manifest("waiting", duration="1s")
    held["spec"]["hold"] = True
    apply(namespace, held)
    wait_phase(namespace, "waiting", "Held")
    apply(namespace, task_manifest("endless", duration="10m"))
    wait_phase(namespace, "endless", "ComputationStarted")

    proc = simtask("release", "waiting", "-n", namespace)
    assert proc.returncode == 0 and "simtask/waiting released" in proc.stdout, proc.stderr
    wait_phase(namespace, "waiting", "Success", within=6)

    proc = simtask("kill", "endless", "-n", namespace)
    assert proc.returncode == 0 and "kill requested" in proc.stdout, proc.stderr
    # wait reports the kill as an ending in failure.
    proc = simtask("wait", "endless", "-n", namespace, "--timeout", f"{5 + HEADROOM}s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert phases_printed(proc.stdout, "endless")[-1] == "Killed"
    # A killed task can be retried: the same write takes the kill back.
    assert simtask("retry", "endless", "-n", namespace).returncode == 0
    task = wait_phase(namespace, "endless", "ComputationStarted")
    assert task["status"]["attempt"] == 2 and task["spec"]["kill"] is False

    # No node has 64 CPUs: its pod waits unscheduled, and a hold still applies.
    apply(namespace, task_manifest("later", duration="1s", resources={"cpu": "64"}))
    wait_phase(namespace, "later", "Submitted")
    assert simtask("hold", "later", "-n", namespace).returncode == 0
    wait_phase(namespace, "later", "Held")


def test_an_unknown_task_is_a_clear_error(namespace: str) -> None:
    for args in (("wait", "nothing"), ("history", "nothing"), ("kill", "nothing")):
        proc = simtask(*args, "-n", namespace)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "nothing" in proc.stderr and "not" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def viewer_kubeconfig(namespace: str) -> str:
    """A kubeconfig for a ServiceAccount that holds the standard `view` role in `namespace`."""
    kubectl("create", "serviceaccount", "viewer", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "viewer",
        "-n",
        namespace,
        "--clusterrole=view",
        f"--serviceaccount={namespace}:viewer",
    )
    token = kubectl("create", "token", "viewer", "-n", namespace).stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "viewer", "user": {"token": token}}],
        "contexts": [
            {
                "name": "viewer",
                "context": {
                    "cluster": admin["clusters"][0]["name"],
                    "user": "viewer",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "viewer",
    }
    path = STATE / f"viewer-{namespace}.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return str(path)


def test_a_user_without_permission_gets_a_clear_error(namespace: str) -> None:
    apply(namespace, task_manifest("theirs", duration="1s", exit_code=1))
    wait_phase(namespace, "theirs", "Failed", within=5)
    kubeconfig = viewer_kubeconfig(namespace)
    # `view` may read (and the namespace comes from the kubeconfig's context) ...
    proc = simtask("history", "theirs", kubeconfig=kubeconfig)
    assert proc.returncode == 0, proc.stderr
    # ... but not retry: the API server's refusal, in words, with a non-zero exit.
    proc = simtask("retry", "theirs", kubeconfig=kubeconfig)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "forbidden" in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert get(namespace, "theirs")["spec"].get("retry", 0) == 0


READER_SELECTOR = "app.kubernetes.io/name=simtask-outputs-reader"


def test_outputs_of_a_task_without_outputs_is_a_clear_error(namespace: str) -> None:
    apply(namespace, task_manifest("bare", duration="1s"))
    proc = simtask("outputs", "bare", "/tmp/never", "-n", namespace)
    assert proc.returncode == 2 and "has no spec.outputs" in proc.stderr, proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_outputs_interrupted_removes_its_reader_pod(
    namespace: str, tmp_path: Path, sig: signal.Signals
) -> None:
    # A claim that never binds (no volume for it): the reader pod waits to be scheduled.
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
                "metadata": {"name": "results"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ),
    )
    apply(
        namespace,
        task_manifest("cfd", duration="1s", outputs={"persistentVolumeClaim": "results"}),
    )
    proc = start("outputs", "cfd", str(tmp_path / "out"), "-n", namespace)
    try:
        readers = eventually(
            lambda: kubectl_json("get", "pods", "-n", namespace, "-l", READER_SELECTOR)["items"],
            timeout=HEADROOM,
            what="the reader pod",
        )
        (reader,) = readers
        claim = reader["spec"]["volumes"][0]["persistentVolumeClaim"]
        assert claim == {"claimName": "results", "readOnly": True}
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=HEADROOM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert kubectl_json("get", "pods", "-n", namespace, "-l", READER_SELECTOR)["items"] == []
