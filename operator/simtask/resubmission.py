"""Resubmission policy: whether a lost attempt comes back, after how long, and where."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

#: Backoff before an automatic resubmission: BASE * 2**resubmissions, capped.
RESUBMIT_BACKOFF_BASE = timedelta(seconds=2)
RESUBMIT_BACKOFF_CAP = timedelta(minutes=5)


def resubmission_allowed(spec: Mapping[str, Any], resubmissions: int) -> bool:
    """Whether a lost attempt is followed by a new one."""
    return bool(spec.get("resubmitOnPreemption", True)) and resubmissions < int(
        spec.get("maxResubmissions", 3)
    )


def resubmit_backoff(resubmissions: int) -> timedelta:
    """How long to wait before resubmission number `resubmissions + 1`."""
    backoff: timedelta = RESUBMIT_BACKOFF_BASE * (2 ** min(resubmissions, 20))
    return min(backoff, RESUBMIT_BACKOFF_CAP)


def placement_group(spec: Mapping[str, Any], spot_preemptions: int) -> str | None:
    """The MachineGroup the next attempt goes to: the fallback once enough spot losses happened."""
    fallback = spec.get("fallbackMachineGroup")
    if fallback and spot_preemptions >= int(spec.get("fallbackAfterPreemptions", 2)):
        return str(fallback)
    group = spec.get("machineGroup")
    return str(group) if group else None
