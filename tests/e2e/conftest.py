"""End-to-end fixtures: one local cluster for the session, a fresh namespace per test."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.e2e.cluster import KUBECONFIG, ROOT, kubectl


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
