"""Conditions per the Kubernetes API conventions, and the set a SimulationTask carries.

Ready, Reconciling and Stalled are what Flux's kstatus and Argo CD read; Succeeded and
Failed appear once the task is terminal, for `kubectl wait --for=condition=...`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from simtask.lifecycle import Phase
from simtask.timestamps import ts


def find_condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """The condition of type `ctype` in `obj.status.conditions`, if there is one."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def condition_true(obj: Mapping[str, Any] | None, *ctypes: str) -> dict[str, Any] | None:
    """The first of the `ctypes` conditions of `obj` whose status is True, if any."""
    for ctype in ctypes:
        cond = find_condition(obj, ctype)
        if cond is not None and cond.get("status") == "True":
            return cond
    return None


def condition(
    old: Sequence[Mapping[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """One condition; its lastTransitionTime moves only when its status does."""
    prev = next((c for c in old if c.get("type") == ctype), None)
    kept = prev.get("lastTransitionTime") if prev and prev.get("status") == status else None
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": kept or ts(now),
    }


def task_conditions(
    old: Sequence[Mapping[str, Any]],
    phase: Phase | None,
    *,
    terminal: bool,
    message: str,
    generation: int,
    now: datetime,
    stalled: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The conditions of a SimulationTask in `phase`; the reason is the phase itself, but
    for a task `stalled` by an error that persists: Stalled says (reason, message)."""
    reason = str(phase) if phase else "Pending"
    succeeded = phase == Phase.SUCCESS
    wanted = [
        ("Ready", "True" if succeeded else "False", reason, message),
        ("Reconciling", "False" if terminal else "True", reason, message),
        ("Stalled", "True" if terminal and not succeeded else "False", reason, message),
    ]
    if stalled is not None and not terminal:
        wanted[2] = ("Stalled", "True", *stalled)
    if terminal:
        wanted += [
            ("Succeeded", "True" if succeeded else "False", reason, message),
            ("Failed", "False" if succeeded else "True", reason, message),
        ]
    return [condition(old, *spec, generation, now) for spec in wanted]
