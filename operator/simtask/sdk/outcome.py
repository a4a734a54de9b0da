"""Pure readings of a task's or a batch's object: has it ended, how, and what changed.

No I/O here, so the CLI's output and exit codes are unit-tested on plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simtask.conditions import condition_true
from simtask.lifecycle import Phase
from simtask.timestamps import parse_ts

#: The phases a SimulationBatch ends in (SPEC §6).
BATCH_FINAL_PHASES = ("Success", "Failed", "Killed")
#: The phase that counts as success, for tasks and batches alike.
SUCCESS = "Success"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def observed(obj: Mapping[str, Any]) -> bool:
    """Whether the operator has seen the latest spec (a retry or kill just written is not)."""
    generation = int(_meta(obj).get("generation") or 0)
    return int(_status(obj).get("observedGeneration") or 0) >= generation


def task_final_phase(obj: Mapping[str, Any]) -> str | None:
    """The phase a task ended in, or None while it has not ended.

    A task has ended when the operator, having seen its latest spec, set the `Succeeded` or
    `Failed` condition: that also tells a final `SpotPreempted` from one that a
    resubmission follows.
    """
    if not observed(obj) or condition_true(obj, "Succeeded", "Failed") is None:
        return None
    phase = _status(obj).get("phase")
    return str(phase) if phase else None


def batch_final_phase(obj: Mapping[str, Any]) -> str | None:
    """The phase a batch ended in, or None while it runs."""
    phase = _status(obj).get("phase")
    if not observed(obj) or phase not in BATCH_FINAL_PHASES:
        return None
    return str(phase)


def final_phase(kind: str, obj: Mapping[str, Any]) -> str | None:
    """`task_final_phase` or `batch_final_phase`, by `kind` (SimulationTask/SimulationBatch)."""
    return batch_final_phase(obj) if kind == "SimulationBatch" else task_final_phase(obj)


@dataclass(frozen=True)
class Change:
    """One status change of a task (a `status.history` entry) or a batch."""

    kind: str
    name: str
    time: datetime
    phase: str
    reason: str = ""
    message: str = ""
    attempt: int | None = None
    #: For a batch: its instance counts at this change.
    counts: tuple[tuple[str, int], ...] = ()


def task_changes(obj: Mapping[str, Any], seen: int) -> list[Change]:
    """The history entries of a task after the first `seen` ones, as Changes."""
    name = str(_meta(obj).get("name") or "")
    changes = []
    for entry in (_status(obj).get("history") or [])[seen:]:
        changes.append(
            Change(
                kind="SimulationTask",
                name=name,
                time=parse_ts(entry.get("time")) or datetime.now(UTC),
                phase=str(entry.get("phase") or ""),
                reason=str(entry.get("reason") or ""),
                message=str(entry.get("message") or ""),
                attempt=entry.get("attempt"),
            )
        )
    return changes


def batch_counts(obj: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """A batch's non-zero instance counts, `total` first, then `pending`, then by phase."""
    instances: Mapping[str, Any] = _status(obj).get("instances") or {}
    order = ["total", "pending", *(str(p) for p in Phase)]
    keys = [k for k in order if k in instances] + sorted(k for k in instances if k not in order)
    return tuple((k, int(instances[k])) for k in keys if int(instances[k] or 0) or k == "total")


def batch_change(obj: Mapping[str, Any], now: datetime | None = None) -> Change:
    """A batch's state now (its phase and counts), as a Change."""
    status = _status(obj)
    return Change(
        kind="SimulationBatch",
        name=str(_meta(obj).get("name") or ""),
        time=now or datetime.now(UTC),
        phase=str(status.get("phase") or "Pending"),
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
        counts=batch_counts(obj),
    )


def succeeded(phase: str | None) -> bool:
    """Whether an ending is a success."""
    return phase == SUCCESS
