"""The objects the benchmark creates: SimulationTasks, and plain Jobs with the very same pods."""

from __future__ import annotations

import copy
from typing import Any

from simtask import API_VERSION, builders, names

Obj = dict[str, Any]

IMAGE = "ghcr.io/example/openfoam:11"
DURATION_ANNOTATION = "testbed.simtask.dev/duration"
SPOT_POOL = "cpu-spot"
STANDARD_POOL = "cpu-standard"
POOL_LABEL = "cloud.google.com/gke-nodepool"
SPOT_TOLERATION = {
    "key": "cloud.google.com/gke-spot",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}
#: Small enough that a scaled pool holds every pod at once (110 pods of 8 CPU per node).
CPU = "50m"
MEMORY = "64Mi"


def task(
    name: str,
    *,
    duration: str,
    machine_group: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> Obj:
    """A SimulationTask whose simulated run lasts `duration`."""
    spec: Obj = {
        "image": IMAGE,
        "command": ["simpleFoam"],
        "args": ["-case", "/outputs/pitzDaily"],
        "resources": {"cpu": CPU, "memory": MEMORY},
        "podTemplate": {
            "metadata": {
                "labels": {"app.kubernetes.io/part-of": "simtask-bench"},
                "annotations": {DURATION_ANNOTATION: duration},
            }
        },
    }
    if machine_group:
        spec["machineGroup"] = machine_group
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return {
        "apiVersion": API_VERSION,
        "kind": "SimulationTask",
        "metadata": {"name": name},
        "spec": spec,
    }


def plain_job(task_obj: Obj, namespace: str) -> Obj:
    """The Job the operator would create for attempt 1 of `task_obj`, made a plain Job.

    Built with the operator's own builder so the pods are the same; what ties it to a task
    (owner reference, the operator's labels and annotation) is taken off, so neither the
    garbage collector nor the operator's label-selected watches ever see it.
    """
    fake = copy.deepcopy(task_obj)
    fake["metadata"] = {
        **fake["metadata"],
        "namespace": namespace,
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    job = builders.build_job(fake, 1, group=None, previous_attempt_phase=None)
    ours = (names.LABEL_TASK_UID, names.LABEL_TASK, names.LABEL_ATTEMPT, names.LABEL_MACHINE_GROUP)
    meta = job["metadata"]
    meta["name"] = task_obj["metadata"]["name"]
    meta.pop("ownerReferences", None)
    meta.pop("annotations", None)
    meta["labels"] = {k: v for k, v in (meta.get("labels") or {}).items() if k not in ours}
    tmeta = job["spec"]["template"]["metadata"]
    tmeta["labels"] = {k: v for k, v in (tmeta.get("labels") or {}).items() if k not in ours}
    return job


def machine_group(name: str) -> Obj:
    """A MachineGroup of the testbed's spot pool (spot detected from the node labels)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "MachineGroup",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {POOL_LABEL: SPOT_POOL}, "tolerations": [dict(SPOT_TOLERATION)]},
    }
