"""What the benchmark's watches saw: when each thing first showed, per task or Job name.

Marks are keyed by a short string (`task:Success@2`, `pod:Running@1`, `job:complete@1`)
and hold, per logical name (the SimulationTask's name, or the plain Job's), the local time
the benchmark first received an event showing it. Objects are told apart by attempt so
resubmissions can be followed.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from simtask import names

Obj = dict[str, Any]

#: The label the Job controller puts on the pods of a plain Job.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def epoch(stamp: str | None) -> float | None:
    """An RFC 3339 timestamp from the API (second resolution) as seconds since the epoch."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _attempt(labels: dict[str, str]) -> int:
    try:
        return int(labels.get(names.LABEL_ATTEMPT) or 1)
    except ValueError:
        return 1


class Recorder:
    """First-seen times and identities, fed by Watch handlers from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[str, dict[str, float]] = {}
        #: (kind, name, attempt) -> every uid seen: more than one means a duplicate.
        self.uids: dict[tuple[str, str, int], set[str]] = {}
        #: (name, attempt) -> the node its pod was bound to.
        self.nodes: dict[tuple[str, int], str] = {}
        #: name -> the last version of the task seen.
        self.tasks: dict[str, Obj] = {}

    # -- reading

    def count(self, mark: str) -> int:
        with self._lock:
            return len(self._marks.get(mark, {}))

    def times(self, mark: str) -> dict[str, float]:
        with self._lock:
            return dict(self._marks.get(mark, {}))

    def names_with(self, mark: str) -> set[str]:
        return set(self.times(mark))

    # -- writing

    def _mark(self, mark: str, name: str, t: float | None) -> None:
        if t is None:
            return
        with self._lock:
            self._marks.setdefault(mark, {}).setdefault(name, t)

    def _uid(self, kind: str, name: str, attempt: int, obj: Obj) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if uid:
            with self._lock:
                self.uids.setdefault((kind, name, attempt), set()).add(str(uid))

    def on_task(self, etype: str, obj: Obj, t: float) -> None:
        """A SimulationTask event."""
        meta = obj.get("metadata") or {}
        name = str(meta.get("name"))
        if etype == "DELETED":
            return
        self._mark("task:added", name, t)
        self._mark("task:created", name, epoch(meta.get("creationTimestamp")))
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase:
            attempt = int(status.get("attempt") or 1)
            self._mark(f"task:{phase}", name, t)
            self._mark(f"task:{phase}@{attempt}", name, t)
        with self._lock:
            self.tasks[name] = obj

    def on_job(self, etype: str, obj: Obj, t: float) -> None:
        """A Job event: the operator's (labelled with its task) or a plain one."""
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = str(labels.get(names.LABEL_TASK) or meta.get("name"))
        attempt = _attempt(labels)
        self._uid("job", name, attempt, obj)
        self._mark(f"job:added@{attempt}", name, t)
        self._mark(f"job:created@{attempt}", name, epoch(meta.get("creationTimestamp")))
        if etype == "DELETED":
            return
        status = obj.get("status") or {}
        if int(status.get("ready") or 0) >= 1:
            self._mark(f"job:ready@{attempt}", name, t)
        for cond in status.get("conditions") or []:
            if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
                self._mark(f"job:{str(cond['type']).lower()}@{attempt}", name, t)

    def on_pod(self, etype: str, obj: Obj, t: float) -> None:
        """A pod event: a task's pod (labelled with its task) or a plain Job's."""
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = labels.get(names.LABEL_TASK) or labels.get(JOB_NAME_LABEL) or labels.get("job-name")
        if not name:
            return
        attempt = _attempt(labels)
        self._uid("pod", name, attempt, obj)
        self._mark(f"pod:added@{attempt}", name, t)
        self._mark(f"pod:created@{attempt}", name, epoch(meta.get("creationTimestamp")))
        status = obj.get("status") or {}
        node = (obj.get("spec") or {}).get("nodeName")
        if node:
            with self._lock:
                self.nodes[(name, attempt)] = str(node)
        if status.get("phase") and etype != "DELETED":
            self._mark(f"pod:{status['phase']}@{attempt}", name, t)
        disrupted = any(
            c.get("type") == "DisruptionTarget" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if disrupted or meta.get("deletionTimestamp") or etype == "DELETED":
            self._mark(f"pod:disrupted@{attempt}", name, t)
