"""Helpers for SimulationTask stories: apply a task, wait for a phase, read its history."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from tests.e2e.cluster import eventually, kubectl, kubectl_json

IMAGE = "ghcr.io/example/openfoam:11"

#: What a busy 2-core machine (the control plane, kwok and the operator share it) may add to
#: any step: every wait in the stories is what the step should take plus this, stated once.
HEADROOM = float(os.environ.get("SIMTASK_E2E_HEADROOM", "10"))

#: Tolerations for the local cluster's tainted pools (SPEC §5).
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TOLERATION = {
    "key": "cloud.google.com/gke-spot",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}


def task_manifest(
    name: str,
    *,
    duration: str = "2s",
    exit_code: int | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A SimulationTask whose simulated run lasts `duration` and exits with `exit_code`."""
    ann = {"testbed.simtask.dev/duration": duration}
    if exit_code is not None:
        ann["testbed.simtask.dev/exit-code"] = str(exit_code)
    ann.update(annotations or {})
    body: dict[str, Any] = {
        "image": IMAGE,
        "command": ["simpleFoam"],
        "resources": {"cpu": "1", "memory": "1Gi"},
        "podTemplate": {"metadata": {"annotations": ann}},
    }
    body.update(spec)
    return {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationTask",
        "metadata": {"name": name},
        "spec": body,
    }


def apply(ns: str, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input_text=json.dumps(manifest))


def get(ns: str, name: str) -> dict[str, Any]:
    return dict(kubectl_json("get", "simulationtask", name, "-n", ns))


def patch_spec(ns: str, name: str, spec: dict[str, Any]) -> None:
    kubectl(
        "patch", "simulationtask", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def wait_phase(
    ns: str, name: str, *phases: str, within: float = 5, timeout: float | None = None
) -> dict[str, Any]:
    """Wait until status.phase is one of `phases`; return the task. The step should take
    `within` seconds (a 2 s task from apply to Success takes about 4); it may take HEADROOM
    more, or `timeout` in all when given."""
    timeout = timeout if timeout is not None else within + HEADROOM

    def probe() -> dict[str, Any] | None:
        task = get(ns, name)
        return task if (task.get("status") or {}).get("phase") in phases else None

    try:
        return eventually(probe, timeout=timeout, what=f"{name} in {phases}")
    except AssertionError as exc:
        status = get(ns, name).get("status") or {}
        raise AssertionError(f"{exc}\nstatus now: {json.dumps(status, indent=1)[:3000]}") from None


def parse_time(value: str) -> datetime:
    """A Kubernetes timestamp."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def entry(task: dict[str, Any], phase: str, attempt: int = 1) -> dict[str, Any]:
    """The history entry of the move into `phase` in `attempt`."""
    for h in (task.get("status") or {}).get("history") or []:
        if h["phase"] == phase and h["attempt"] == attempt:
            return dict(h)
    raise AssertionError(f"no {phase} in attempt {attempt}: {history(task)}")


def history(task: dict[str, Any]) -> list[str]:
    """The phases of status.history, oldest first."""
    return [h["phase"] for h in (task.get("status") or {}).get("history") or []]


def jobs_of(ns: str, name: str) -> list[dict[str, Any]]:
    return list(kubectl_json("get", "jobs", "-n", ns, "-l", f"simtask.dev/task={name}")["items"])


def pods_of(ns: str, name: str) -> list[dict[str, Any]]:
    return list(kubectl_json("get", "pods", "-n", ns, "-l", f"simtask.dev/task={name}")["items"])
