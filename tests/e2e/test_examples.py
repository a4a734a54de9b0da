"""The manifests in examples/ are accepted by the API server, and the CFD run really runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, eventually, kubectl
from tests.e2e.tasks import get, history, jobs_of, wait_phase

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_server_side_dry_run(chart: str, namespace: str, path: Path) -> None:
    proc = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def cfd_volume() -> Iterator[None]:
    yield
    # The example's static PersistentVolume is cluster-scoped and kept (Retain).
    kubectl("delete", "pv", "cavity-results", "--ignore-not-found", "--wait=false")


@pytest.mark.usefixtures("operator", "cfd_volume")
def test_cfd_example_runs_with_its_inputs_and_outputs(namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "cfd-cpu.yaml"))
    eventually(
        lambda: (
            kubectl(
                "get", "pvc", "cavity-results", "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
            == "Bound"
        ),
        timeout=60,
        what="the outputs claim Bound",
    )
    task = wait_phase(namespace, "cavity", "Success", timeout=120)
    assert history(task)[-1] == "Success"
    pod_spec = jobs_of(namespace, "cavity")[0]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod_spec["containers"][0]["volumeMounts"]}
    assert mounts["/outputs"].get("readOnly") is not True
    assert mounts["/inputs/case"]["readOnly"] is True
    assert get(namespace, "cavity")["status"]["exitCode"] == 0
