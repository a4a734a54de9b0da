"""SimulationBatches through `kubectl simtask` and the SDK on the local cluster (SPEC §6,
§8): submit and wait with SPEC §8's exit codes, the summary, retry of only the instances
that did not succeed, kill."""

from __future__ import annotations

import json
from typing import Any

import pytest

from simtask.sdk import Batch, Client
from tests.e2e.cluster import KUBECONFIG, kubectl_json
from tests.e2e.simtask_cli import manifest_file, simtask
from tests.e2e.tasks import HEADROOM, IMAGE, get

pytestmark = pytest.mark.usefixtures("operator")


def batch_spec(exit_codes: list[int], duration: str = "1s") -> dict[str, Any]:
    """A batch of len(exit_codes) instances; instance i exits with exit_codes[i]."""
    return {
        "count": len(exit_codes),
        "parameters": [{"EXIT": str(code)} for code in exit_codes],
        "template": {
            "image": IMAGE,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "podTemplate": {
                "metadata": {
                    "annotations": {
                        "testbed.simtask.dev/duration": duration,
                        "testbed.simtask.dev/exit-code": "$(SIMTASK_PARAM_EXIT)",
                    }
                }
            },
        },
    }


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationBatch",
        "metadata": {"name": name},
        "spec": spec,
    }


def instances(namespace: str, batch: str) -> dict[str, dict[str, Any]]:
    items = kubectl_json("get", "simtasks", "-n", namespace, "-l", f"simtask.dev/batch={batch}")
    return {t["metadata"]["labels"]["simtask.dev/index"]: t for t in items["items"]}


def test_submit_wait_summary_and_retry_of_the_failed_instances(namespace: str) -> None:
    path = manifest_file(manifest("sweep", batch_spec([0, 3, 0])))
    proc = simtask("submit", path, "-n", namespace, "--wait", "--timeout", f"{6 + HEADROOM}s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "simbatch/sweep created" in proc.stdout
    last = [line for line in proc.stdout.splitlines() if "simbatch/sweep" in line][-1]
    assert "Failed" in last and "2 Success, 1 Failed" in last, proc.stdout

    summary = json.loads(simtask("summary", "sweep", "-n", namespace, "-o", "json").stdout)
    assert summary["phase"] == "Failed" and summary["total"] == 3
    assert summary["failed_indexes"] == "1" and summary["succeeded_indexes"] == "0,2"
    human = simtask("summary", "sweep", "-n", namespace).stdout
    assert "3 total: 2 Success, 1 Failed" in human

    proc = simtask("retry", "sweep", "-n", namespace)
    assert proc.returncode == 0 and "spec.retry=1" in proc.stdout, proc.stderr
    proc = simtask("wait", "simbatch/sweep", "-n", namespace, "--timeout", f"{6 + HEADROOM}s")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # instance 1 fails again
    tasks = instances(namespace, "sweep")
    assert {i: t["status"]["attempt"] for i, t in tasks.items()} == {"0": 1, "1": 2, "2": 1}


def test_sdk_batch_submit_wait_tasks(namespace: str, cluster: str) -> None:
    client = Client.connect(str(KUBECONFIG))
    batch = Batch.submit(batch_spec([0, 0, 0, 0]), namespace=namespace, client=client)
    assert batch.name.startswith("batch-")
    assert batch.wait(timeout=8 + HEADROOM) == "Success"
    summary = batch.summary()
    assert (summary.total, summary.counts) == (4, {"Success": 4})
    assert [t.name for t in batch.tasks()] == [f"{batch.name}-{i}" for i in range(4)]
    assert batch.tasks(phase="Failed") == []
    assert batch.task(2).phase == "Success"


def test_kill_a_batch(namespace: str) -> None:
    path = manifest_file(manifest("endless", batch_spec([0, 0], duration="10m")))
    assert simtask("submit", path, "-n", namespace).returncode == 0
    proc = simtask("kill", "simbatch/endless", "-n", namespace)
    assert proc.returncode == 0 and "kill requested" in proc.stdout, proc.stderr
    proc = simtask("wait", "endless", "-n", namespace, "--timeout", f"{5 + HEADROOM}s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    batch = kubectl_json("get", "simulationbatch", "endless", "-n", namespace)
    assert batch["status"]["phase"] == "Killed"
    for task in instances(namespace, "endless").values():
        assert get(namespace, task["metadata"]["name"])["status"]["phase"] == "Killed"
