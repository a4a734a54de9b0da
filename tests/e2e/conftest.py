"""End-to-end fixtures: one local cluster for the session, a fresh namespace per test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.e2e.cluster import KUBECONFIG, ROOT, STATE, eventually, kubectl
from tests.e2e.pools import pools  # noqa: F401 - a fixture for every e2e test


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "operator_errors: the test provokes errors the operator logs and counts"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster() -> str:
    """Start the local cluster (or reuse one that is up). A cluster that fails to start fails."""
    proc = subprocess.run([str(ROOT / "hack" / "testbed"), "up"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"the local cluster did not start:\n{proc.stderr[-8000:]}", pytrace=False)
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    return str(KUBECONFIG)


@pytest.fixture(scope="session")
def api(cluster: str) -> client.ApiClient:
    """A Kubernetes API client for the local cluster, as its admin."""
    return config.new_client_from_config(config_file=cluster)


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    """A namespace of the test's own, deleted after it."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().replace("_", "-"))[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


#: Lines of the operator's log that mean a bug: a traceback, or an ERROR the test did not ask
#: for. Warnings (a watch restarted, a retried request) are the operator doing its job.
_PROBLEM = re.compile(r"Traceback \(most recent call last\)| ERROR ")


class Operator:
    """The operator as users run it: the `simtask-operator` command, against the local cluster."""

    def __init__(
        self,
        kubeconfig: str,
        *,
        name: str = "operator",
        metrics_port: int | None = None,
        health_port: int | None = None,
        args: tuple[str, ...] = (),
        chart_args: tuple[str, ...] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        #: What the chart's Deployment tells the operator about its install (namespaces
        #: served, Secret inputs): by default, as the session's release says.
        self.chart_args = chart_args
        self.name = name
        self.metrics_port = metrics_port or int(os.environ.get("SIMTASK_E2E_METRICS_PORT", "18000"))
        self.health_port = health_port or int(os.environ.get("SIMTASK_E2E_HEALTH_PORT", "18080"))
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.logs: list[Path] = []

    @property
    def log(self) -> Path:
        return self.logs[-1]

    def start(self, *, wait: str = "caches") -> None:
        """Start it; wait until /healthz says `wait` ("caches" synced, or "leader")."""
        self.starts += 1
        logdir = STATE / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        path = logdir / f"{self.name}-{os.getpid()}-{self.starts}.log"
        self.logs.append(path)
        log = open(path, "wb")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simtask.main",
                "--bind",
                "127.0.0.1",
                "--metrics-port",
                str(self.metrics_port),
                "--health-port",
                str(self.health_port),
                *(self.chart_args if self.chart_args is not None else release_args()),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        eventually(lambda: self.health().get(wait) is True, timeout=60, what=f"{self.name} {wait}")

    def health(self) -> dict[str, object]:
        """What /healthz says; {} while it does not answer."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}; log: {self.log}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as resp:
                return dict(json.loads(resp.read()))
        except (OSError, ValueError):
            return {}

    def kill(self) -> None:
        """SIGKILL: nothing gets to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            return str(resp.read().decode())

    def reconcile_errors(self) -> float:
        """simtask_reconcile_errors_total, all kinds."""
        from prometheus_client.parser import text_string_to_metric_families

        return sum(
            sample.value
            for family in text_string_to_metric_families(self.metrics())
            if family.name == "simtask_reconcile_errors"
            for sample in family.samples
            if sample.name == "simtask_reconcile_errors_total"
        )

    def log_mark(self) -> tuple[int, int]:
        """Where the logs stand now: (log count, size of the last)."""
        return len(self.logs), self.log.stat().st_size if self.logs else 0

    def problems(self, since: tuple[int, int] = (1, 0)) -> list[str]:
        """Lines of the logs written since `since` that mean a bug (see _PROBLEM)."""
        found: list[str] = []
        count, offset = since
        for index, path in enumerate(self.logs[max(count - 1, 0) :], start=max(count - 1, 0)):
            with open(path, "rb") as f:
                f.seek(offset if index == count - 1 else 0)
                lines = f.read().decode(errors="replace").splitlines()
            found += [f"{path.name}: {line}" for line in lines if _PROBLEM.search(line)]
        return found


RELEASE = "simtask-operator"
RELEASE_NAMESPACE = "simtask-system"
#: The operator's arguments that depend on how the chart was installed.
INSTALL_ARGS = ("--namespaces", "--check-secret-inputs", "--no-check-secret-inputs")


def release_args(release: str = RELEASE, namespace: str = RELEASE_NAMESPACE) -> tuple[str, ...]:
    """The arguments of the installed release's Deployment that say how it was installed
    (`watchNamespaces`, Secret access), so the operator beside the cluster runs as the
    chart would run it."""
    from tests.unit.tools import helm, load_yaml_stream

    manifest = subprocess.run(
        [helm(), "get", "manifest", release, "-n", namespace, "--kubeconfig", str(KUBECONFIG)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (deployment,) = [d for d in load_yaml_stream(manifest) if d.get("kind") == "Deployment"]
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
    ]
    return tuple(a for a in container["args"] if a.split("=", 1)[0] in INSTALL_ARGS)


CRD_NAMES = (
    "simulationtasks.simtask.dev",
    "machinegroups.simtask.dev",
    "simulationbatches.simtask.dev",
)


@pytest.fixture(scope="session")
def chart(cluster: str) -> str:
    """The chart installed with `helm upgrade --install`, CRDs included, as users install it.

    The Deployment is scaled to 0 (the local cluster's nodes are simulated, so a pod there
    would run nothing); the operator runs beside the cluster with a TokenRequest token of
    the chart's ServiceAccount, so the real RBAC authorizer refuses whatever the chart forgot.
    Returns the path of a kubeconfig for that ServiceAccount.
    """
    from tests.unit.tools import helm

    for crd in CRD_NAMES:  # CRDs applied by hand (hack/demo) are adopted by the release.
        if kubectl("get", "crd", crd, check=False).returncode == 0:
            kubectl(
                "annotate",
                "crd",
                crd,
                "--overwrite",
                f"meta.helm.sh/release-name={RELEASE}",
                f"meta.helm.sh/release-namespace={RELEASE_NAMESPACE}",
            )
            kubectl("label", "crd", crd, "--overwrite", "app.kubernetes.io/managed-by=Helm")
    proc = subprocess.run(
        [
            helm(),
            "upgrade",
            "--install",
            RELEASE,
            str(ROOT / "helm" / RELEASE),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--kubeconfig",
            cluster,
            "--set",
            "replicaCount=0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"helm install failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRD_NAMES)
    )
    token = kubectl(
        "create", "token", RELEASE, "-n", RELEASE_NAMESPACE, "--duration=6h"
    ).stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": RELEASE, "user": {"token": token}}],
        "contexts": [
            {"name": RELEASE, "context": {"cluster": admin["clusters"][0]["name"], "user": RELEASE}}
        ],
        "current-context": RELEASE,
    }
    path = STATE / "operator.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="session")
def operator(chart: str) -> Iterator[Operator]:
    """The operator as the chart's ServiceAccount, for the whole session (tests may kill and
    restart it). Its log must stay free of tracebacks and ERROR lines for the whole session."""
    op = Operator(chart)
    op.start()
    yield op
    op.stop()
    problems = op.problems()
    if problems:
        pytest.fail("the operator logged errors:\n" + "\n".join(problems[:40]), pytrace=False)


@pytest.fixture
def session_operator_paused(operator: Operator) -> Iterator[Operator]:
    """The session's operator stopped for a test that runs its own, started again after."""
    operator.stop()
    yield operator
    operator.start()


@pytest.fixture(autouse=True)
def operator_stays_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the operator leaves no traceback or ERROR line in its log and does not
    raise simtask_reconcile_errors_total, unless marked `operator_errors` (fault tests)."""
    if "operator" not in request.fixturenames:
        yield
        return
    op: Operator = request.getfixturevalue("operator")
    mark, starts, errors = op.log_mark(), op.starts, op.reconcile_errors()
    yield
    if request.node.get_closest_marker("operator_errors") is not None:
        return
    problems = op.problems(mark)
    assert not problems, "the operator logged errors:\n" + "\n".join(problems[:40])
    if op.starts == starts:  # A restarted operator counts from zero again.
        assert op.reconcile_errors() == errors, "reconcile passes failed during the test"
