"""End-to-end fixtures: one local cluster for the session, a fresh namespace per test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.e2e.cluster import KUBECONFIG, ROOT, STATE, eventually, kubectl


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
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


class Operator:
    """The operator as users run it: the `simtask-operator` command, against the local cluster."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.metrics_port = int(os.environ.get("SIMTASK_E2E_METRICS_PORT", "18000"))
        self.health_port = int(os.environ.get("SIMTASK_E2E_HEALTH_PORT", "18080"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        logdir = STATE / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        log = open(logdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 - owned by the child
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
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        eventually(self._healthy, timeout=60, what="operator /healthz with synced caches")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited with {self.proc.returncode}; log: operator-{self.starts}.log"
            )
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ) as resp:
                return resp.status == 200 and json.loads(resp.read()).get("caches") is True
        except (OSError, ValueError):
            return False

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


@pytest.fixture(scope="session")
def crds(cluster: str) -> None:
    """The CRDs, installed as users install them, and Established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/simulationtasks.simtask.dev",
        "crd/machinegroups.simtask.dev",
    )


@pytest.fixture(scope="session")
def operator(cluster: str, crds: None) -> Iterator[Operator]:
    """The operator, running for the whole session (tests may kill and restart it)."""
    op = Operator(cluster)
    op.start()
    yield op
    op.stop()
