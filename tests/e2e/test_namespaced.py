"""A namespace-scoped install (`watchNamespaces`): the operator serves its namespaces and
ignores the others, with Roles there and no cluster-wide access to tasks, Jobs, pods or
Secrets. The chart is installed as a second release, the operator runs as its own
ServiceAccount through the real authorizer, and the session's operator is paused meanwhile."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client

from tests.e2e.cluster import KUBECONFIG, ROOT, STATE, eventually, kubectl, kubectl_json
from tests.e2e.conftest import RELEASE, Operator, release_args
from tests.e2e.tasks import HEADROOM, apply, get, jobs_of, task_manifest, wait_phase
from tests.unit.tools import helm, load_yaml_stream

SCOPED = "simtask-scoped"
SCOPED_NAMESPACE = "simtask-scoped-system"


@dataclass
class ScopedInstall:
    served: str
    other: str
    account: str
    kubeconfig: str
    objects: list[dict[str, object]]


def _helm(*args: str) -> str:
    proc = subprocess.run(
        [helm(), *args, "--kubeconfig", str(KUBECONFIG)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _token_kubeconfig(account: str, path: str) -> str:
    token = kubectl(
        "create", "token", account, "-n", SCOPED_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    cluster = admin["clusters"][0]["name"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster, "user": account}}],
        "current-context": account,
    }
    out = STATE / path
    out.write_text(json.dumps(config))
    out.chmod(0o600)
    return str(out)


@pytest.fixture
def scoped(chart: str, core: client.CoreV1Api) -> Iterator[ScopedInstall]:
    """The chart installed a second time, serving one fresh namespace; another beside it."""
    suffix = uuid.uuid4().hex[:5]
    served, other = f"scoped-served-{suffix}", f"scoped-other-{suffix}"
    for name in (served, other):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        _helm(
            "upgrade",
            "--install",
            SCOPED,
            str(ROOT / "helm" / RELEASE),
            "--namespace",
            SCOPED_NAMESPACE,
            "--create-namespace",
            "--set",
            "replicaCount=0",
            "--set",
            "crds.install=false",
            "--set",
            "userRoles.enabled=false",
            "--set",
            f"watchNamespaces={{{served}}}",
        )
        objects = load_yaml_stream(_helm("get", "manifest", SCOPED, "-n", SCOPED_NAMESPACE))
        (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
        name = str(account["metadata"]["name"])
        yield ScopedInstall(
            served, other, name, _token_kubeconfig(name, "scoped.kubeconfig"), objects
        )
    finally:
        subprocess.run(
            [helm(), "uninstall", SCOPED, "-n", SCOPED_NAMESPACE, "--kubeconfig", str(KUBECONFIG)],
            capture_output=True,
            timeout=120,
        )
        for name in (served, other):
            kubectl("delete", "namespace", name, "--wait=false", check=False)


def can_i(install: ScopedInstall, *args: str) -> bool:
    user = f"system:serviceaccount:{SCOPED_NAMESPACE}:{install.account}"
    proc = kubectl("auth", "can-i", "--as", user, *args, check=False)
    return proc.stdout.strip() == "yes"


def test_a_namespace_scoped_install_holds_no_cluster_wide_task_job_pod_or_secret_access(
    scoped: ScopedInstall,
) -> None:
    # What the API server's authorizer says, as the install's ServiceAccount.
    ns, other = scoped.served, scoped.other
    assert can_i(scoped, "create", "jobs.batch", "-n", ns)
    assert can_i(scoped, "watch", "pods", "-n", ns)
    assert can_i(scoped, "get", "secrets", "-n", ns)
    assert can_i(scoped, "patch", "simulationtasks.simtask.dev/status", "-n", ns)
    assert can_i(scoped, "watch", "nodes")
    assert can_i(scoped, "patch", "machinegroups.simtask.dev")
    for args in (
        ("create", "jobs.batch", "-n", other),
        ("list", "pods", "-n", other),
        ("list", "pods", "--all-namespaces"),
        ("get", "secrets", "-n", other),
        ("get", "secrets", "-n", "kube-system"),
        ("list", "simulationtasks.simtask.dev", "--all-namespaces"),
        ("get", "configmaps", "-n", other),
    ):
        assert not can_i(scoped, *args), args
    # And as objects: its one ClusterRole grants nothing on Secrets, Jobs or pods.
    (role,) = [
        o
        for o in scoped.objects
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == scoped.account  # type: ignore[index]
    ]
    live = kubectl_json("get", "clusterrole", scoped.account)
    assert live["rules"] == role["rules"]
    granted = {r for rule in live["rules"] for r in rule["resources"]}
    assert granted.isdisjoint({"secrets", "jobs", "pods", "simulationtasks"}), granted


@pytest.mark.operator_errors
def test_a_namespace_scoped_operator_serves_its_namespaces_and_ignores_the_others(
    scoped: ScopedInstall, session_operator_paused: Operator
) -> None:
    args = release_args(SCOPED, SCOPED_NAMESPACE)
    assert args == (f"--namespaces={scoped.served}",), args
    op = Operator(
        scoped.kubeconfig,
        name="operator-scoped",
        metrics_port=18030,
        health_port=18110,
        chart_args=args,
    )
    op.start()
    try:
        # Created first, so that the served task's success is the clock for "ignored".
        apply(scoped.other, task_manifest("ignored", duration="1s"))
        apply(scoped.served, task_manifest("served", duration="1s"))
        apply(
            scoped.served,
            task_manifest("licensed", inputs=[{"name": "license", "secret": "solver-license"}]),
        )
        wait_phase(scoped.served, "served", "Success", within=HEADROOM)
        # Secrets of a served namespace are looked up: the missing one is named at once.
        task = wait_phase(scoped.served, "licensed", "PendingInput")
        assert task["status"]["message"] == (
            f"input 'license': Secret 'solver-license' does not exist in namespace "
            f"'{scoped.served}'"
        )
        assert not jobs_of(scoped.served, "licensed")
        kubectl(
            "create",
            "secret",
            "generic",
            "solver-license",
            "-n",
            scoped.served,
            "--from-literal=k=v",
        )
        wait_phase(scoped.served, "licensed", "Success", within=HEADROOM)
        # The other namespace's task was never touched: no status, no Job.
        assert not get(scoped.other, "ignored").get("status")
        assert not jobs_of(scoped.other, "ignored")
        assert not op.problems(), op.problems()
        assert "forbidden" not in op.log.read_text().lower()
    finally:
        op.stop()


@pytest.mark.usefixtures("operator")
def test_task_pods_pass_baseline_pod_security_and_restricted_says_why_not(
    namespace: str,
) -> None:
    """The README's advice for tenant namespaces, through the real PodSecurity admission."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
    apply(namespace, task_manifest("baseline", duration="1s"))
    wait_phase(namespace, "baseline", "Success", within=HEADROOM)
    kubectl(
        "label",
        "namespace",
        namespace,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
    )
    apply(namespace, task_manifest("restricted", duration="1s"))
    task = eventually(
        lambda: (
            (t := get(namespace, "restricted")).get("status", {}).get("reason")
            == "PodCreationFailed"
            and t
        ),
        timeout=HEADROOM * 2,
        what="the task to say its pod was refused",
    )
    assert task["status"]["phase"] == "Submitted"
    assert 'violates PodSecurity "restricted' in task["status"]["message"]
