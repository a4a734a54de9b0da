"""Kept logs (SPEC §7): when an attempt's log is kept, how it is cut, and the ConfigMap it goes in.

The operator reads the simulator's log once, when an attempt ends and its pod can still be
read, and keeps its last lines in a ConfigMap `<job-name>-log` owned by the task, so that
`kubectl simtask logs --attempt N` still shows it after the pod and Job are gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from simtask import GROUP, names
from simtask.builders import task_owner_reference
from simtask.lifecycle import Phase

KeepLogs = Literal["OnFailure", "Always", "Never"]
#: `spec.keepLogs` when the task does not say.
DEFAULT_KEEP_LOGS: KeepLogs = "OnFailure"
#: The most of a log kept: its last lines, cut at a line boundary from the start.
MAX_LOG_BYTES = 256 * 1024
#: Lines asked of the kubelet: enough for MAX_LOG_BYTES of lines of 26 bytes or more.
TAIL_LINES = 10_000
#: The ConfigMap key of the log.
LOG_KEY = "log"
#: Set to "true" on a kept log that is not the whole log.
ANNOTATION_TRUNCATED = f"{GROUP}/log-truncated"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "simtask-operator"


def should_keep(keep_logs: object, phase: Phase | str) -> bool:
    """Whether an attempt that ended in `phase` keeps its log under `spec.keepLogs`
    (`OnFailure`, the default: every ending but Success)."""
    policy = keep_logs if keep_logs in ("OnFailure", "Always", "Never") else DEFAULT_KEEP_LOGS
    if policy == "Never":
        return False
    return policy == "Always" or str(phase) != Phase.SUCCESS


def log_configmap_name(job_name: str) -> str:
    """`<job-name>-log`: Job names are at most 63 characters, ConfigMap names 253."""
    return f"{job_name}-log"


def log_tail(data: bytes, limit: int = MAX_LOG_BYTES) -> tuple[str, bool]:
    """The last lines of `data` that fit in `limit` bytes of UTF-8, and whether any were cut.

    The cut is at a line boundary from the start; a last line longer than `limit` alone is
    kept as its last `limit` bytes. Bytes that are not UTF-8 become U+FFFD.
    """
    truncated = False
    while True:
        if len(data) > limit:
            truncated = True
            cut = len(data) - limit
            if data[cut - 1 : cut] != b"\n":
                # The cut lands inside a line: start after it, unless it is the last one.
                newline = data.find(b"\n", cut)
                if 0 <= newline < len(data) - 1:
                    cut = newline + 1
            # Never start inside a character (continuation bytes are 0b10xxxxxx).
            while cut < len(data) and 0x80 <= data[cut] <= 0xBF:
                cut += 1
            data = data[cut:]
        text = data.decode("utf-8", errors="replace")
        encoded = text.encode("utf-8")
        if len(encoded) <= limit:
            return text, truncated
        data = encoded  # Replacement characters made it longer: cut again.


def build_log_configmap(
    task: Mapping[str, Any], attempt: int, job_name: str, log: str, truncated: bool
) -> dict[str, Any]:
    """The ConfigMap keeping attempt `attempt`'s log: owned by the task (not as its
    controller), labelled with the task and attempt, written once (immutable)."""
    meta: Mapping[str, Any] = task.get("metadata") or {}
    task_name = str(meta["name"])
    labels = {
        names.LABEL_TASK_UID: str(meta["uid"]),
        names.LABEL_ATTEMPT: str(attempt),
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    if (short := names.label_value_or_none(task_name)) is not None:
        labels[names.LABEL_TASK] = short
    metadata: dict[str, Any] = {
        "name": log_configmap_name(job_name),
        "namespace": meta["namespace"],
        "labels": labels,
        "annotations": {names.ANNOTATION_TASK_NAME: task_name},
        "ownerReferences": [task_owner_reference(task_name, str(meta["uid"]), controller=False)],
    }
    if truncated:
        metadata["annotations"][ANNOTATION_TRUNCATED] = "true"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "immutable": True,
        "data": {LOG_KEY: log},
    }
