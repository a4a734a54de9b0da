"""The test's own node pools: kwok nodes (spot or on-demand) and a MachineGroup for them.

Every test that disturbs nodes makes its own, so tainting, draining or deleting a node
disturbs no other test. A spot pool's nodes carry the GKE spot label and taint.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from kubernetes import client

from tests.e2e.cluster import condition, eventually, kubectl, testbed
from tests.e2e.tasks import SPOT_TOLERATION

POOL_LABEL = "e2e.simtask.dev/pool"
SPOT_LABEL = "cloud.google.com/gke-spot"
SPOT_TAINT = {"key": SPOT_LABEL, "value": "true", "effect": "NoSchedule"}
#: Each node of a test's pool has room for exactly one task (of TASK_RESOURCES).
NODE_CPU = "2"


# ---------------------------------------------------------------- the test's own node pools


@dataclass
class Pool:
    """A MachineGroup of the test's own and the kwok nodes it selects."""

    group: str
    selector: dict[str, str]
    spot: bool
    nodes: list[str] = field(default_factory=list)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def node_ready(name: str) -> bool:
    proc = kubectl("get", "node", name, "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    return (condition(json.loads(proc.stdout), "Ready") or {}).get("status") == "True"


@pytest.fixture
def pools(core: client.CoreV1Api) -> Iterator[Callable[..., Pool]]:
    """Make a pool: kwok nodes (spot or on-demand) and a MachineGroup selecting only them."""
    groups: list[str] = []
    nodes: list[str] = []

    def make(*, spot: bool, nodes_count: int = 2) -> Pool:
        pool_id = uuid.uuid4().hex[:8]
        kind = "spot" if spot else "ondemand"
        pool = Pool(group=f"e2e-{kind}-{pool_id}", selector={POOL_LABEL: pool_id}, spot=spot)
        labels = {**pool.selector, **({SPOT_LABEL: "true"} if spot else {})}
        for i in range(nodes_count):
            name = f"{pool.group}-{i}"
            core.create_node(
                testbed.fake_node(
                    name,
                    f"e2e-{kind}",
                    cpu=NODE_CPU,
                    labels=labels,
                    taints=[SPOT_TAINT] if spot else None,
                )
            )
            nodes.append(name)
            pool.nodes.append(name)
        for name in pool.nodes:
            eventually(lambda name=name: node_ready(name), timeout=30, what=f"node {name} Ready")
        tolerations = f"tolerations: [{json.dumps(SPOT_TOLERATION)}]" if spot else ""
        manifest = f"""
apiVersion: simtask.dev/v1alpha1
kind: MachineGroup
metadata:
  name: {pool.group}
spec:
  nodeSelector: {{{POOL_LABEL}: "{pool_id}"}}
  {tolerations}
"""
        kubectl("apply", "-f", "-", input_text=manifest)
        groups.append(pool.group)
        return pool

    yield make
    for group in groups:
        kubectl("delete", "machinegroup", group, "--ignore-not-found", "--wait=false", check=False)
    for name in nodes:
        kubectl("delete", "node", name, "--ignore-not-found", "--wait=false", check=False)
