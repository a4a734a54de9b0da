"""The chart against a real API server: server-side validation, and least-privilege RBAC."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.cluster import ROOT, kubectl
from tests.e2e.conftest import RELEASE, RELEASE_NAMESPACE
from tests.unit.tools import helm

CHART = ROOT / "helm" / RELEASE


def render(*sets: str) -> str:
    args = [helm(), "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE]
    for value in sets:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("sets", [(), ("grafanaDashboard.enabled=true", "crds.install=false")])
def test_rendered_chart_passes_server_side_dry_run(chart: str, sets: tuple[str, ...]) -> None:
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input_text=render(*sets), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "deployment.apps/simtask-operator" in proc.stdout


def can_i(kubeconfig: str, *args: str) -> bool:
    proc = kubectl("--kubeconfig", kubeconfig, "auth", "can-i", *args, check=False)
    return proc.stdout.strip() == "yes"


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (("list", "simulationtasks.simtask.dev", "--all-namespaces"), True),
        (("patch", "simulationtasks.simtask.dev/status", "-n", "default"), True),
        (("create", "jobs.batch", "-n", "default"), True),
        (("watch", "pods", "--all-namespaces"), True),
        (("create", "events", "-n", "default"), True),
        (("patch", "machinegroups.simtask.dev"), True),
        # Kept logs: an ended attempt's log read once, kept in a ConfigMap created once.
        (("get", "pods", "--subresource=log", "-n", "default"), True),
        (("create", "configmaps", "-n", "default"), True),
        (("update", "configmaps", "-n", "default"), False),
        (("delete", "configmaps", "-n", "default"), False),
        # A batch's instances are tasks the operator creates.
        (("create", "simulationtasks.simtask.dev", "-n", "default"), True),
        (("watch", "simulationbatches.simtask.dev", "--all-namespaces"), True),
        (("patch", "simulationbatches.simtask.dev/status", "-n", "default"), True),
        # What the operator never needs, it cannot do.
        (("create", "pods", "-n", "default"), False),
        (("delete", "pods", "-n", "default"), False),
        # Serving the whole cluster it holds no Secret permission at all (SPEC §4).
        (("get", "secrets", "-n", "default"), False),
        (("list", "secrets", "-n", "default"), False),
        (("update", "simulationtasks.simtask.dev", "-n", "default"), False),
        (("create", "simulationbatches.simtask.dev", "-n", "default"), False),
        (("update", "simulationbatches.simtask.dev", "-n", "default"), False),
        (("delete", "nodes"), False),
        (("patch", "nodes"), False),
        (("create", "clusterrolebindings.rbac.authorization.k8s.io"), False),
        (("get", "customresourcedefinitions.apiextensions.k8s.io"), False),
    ],
)
def test_service_account_is_least_privilege(
    chart: str, args: tuple[str, ...], allowed: bool
) -> None:
    assert can_i(chart, *args) is allowed
