"""`Batch`: one SimulationBatch (SPEC §6), an array of tasks run from one spec."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simtask.lifecycle import Phase
from simtask.sdk import operations
from simtask.sdk.client import BATCHES, NotFoundError, SimObject
from simtask.sdk.outcome import batch_counts
from simtask.sdk.task import Task
from simtask.sdk.waiting import DELETED, OnChange, Ref, wait_for
from simtask.timestamps import parse_ts

#: Labels the operator sets on every instance of a batch.
LABEL_BATCH = "simtask.dev/batch"
LABEL_INDEX = "simtask.dev/index"
GENERATED_NAME_PREFIX = "batch-"


@dataclass(frozen=True)
class BatchSummary:
    """A batch's counts and index ranges (its `status`, in one place)."""

    name: str
    phase: str
    total: int
    #: Instances by task phase, and `pending` (no task yet); zero counts left out.
    counts: dict[str, int]
    succeeded_indexes: str
    failed_indexes: str
    resubmissions: int
    cpu_seconds: float
    gpu_seconds: float
    start_time: datetime | None
    completion_time: datetime | None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> BatchSummary:
        """The summary of a batch object."""
        status = obj.get("status") or {}
        counts = dict(batch_counts(obj))
        return cls(
            name=str(obj["metadata"]["name"]),
            phase=str(status.get("phase") or "Pending"),
            total=int(counts.pop("total", 0)),
            counts=counts,
            succeeded_indexes=str(status.get("succeededIndexes") or ""),
            failed_indexes=str(status.get("failedIndexes") or ""),
            resubmissions=int(status.get("resubmissions") or 0),
            cpu_seconds=float(status.get("cpuSeconds") or 0),
            gpu_seconds=float(status.get("gpuSeconds") or 0),
            start_time=parse_ts(status.get("startTime")),
            completion_time=parse_ts(status.get("completionTime")),
        )


class Batch(SimObject):
    """A SimulationBatch in the cluster: submit it, wait for it, see how its instances did."""

    KIND = BATCHES
    GENERATED_NAME_PREFIX = GENERATED_NAME_PREFIX

    @property
    def phase(self) -> str | None:
        """The phase as last read (see `refresh`)."""
        phase = (self.obj.get("status") or {}).get("phase")
        return str(phase) if phase else None

    def __repr__(self) -> str:
        return f"<Batch {self.namespace}/{self.name} {self.phase or 'new'}>"

    def wait(self, timeout: float | None = None, *, on_change: OnChange | None = None) -> str:
        """Block until the batch ends; return its phase (`Success`, `Failed` or `Killed`).
        Ctrl-C leaves it running."""
        ref = Ref(BATCHES, self.namespace, self.name)
        phase = wait_for(self.client, [ref], timeout=timeout, on_change=on_change)[ref]
        if phase == DELETED:
            raise NotFoundError(f"simbatch/{self.name} was deleted while waiting for it")
        self.refresh()
        return phase

    def summary(self) -> BatchSummary:
        """Its counts and index ranges now (reads the batch again)."""
        return BatchSummary.of(self.refresh().obj)

    def _instances(self, index: int | None = None) -> list[Task]:
        """Its instances: tasks it owns, found by the labels the operator puts on them
        (the batch label is left out for a name too long to be a label value)."""
        selector = [f"{LABEL_BATCH}={self.name}"] if len(self.name) <= 63 else []
        if index is not None:
            selector.append(f"{LABEL_INDEX}={index}")
        uid = self.obj["metadata"].get("uid")
        found = Task.list(self.namespace, selector=",".join(selector) or None, client=self.client)
        return [
            t
            for t in found
            if LABEL_INDEX in (t.obj["metadata"].get("labels") or {})
            and any(o.get("uid") == uid for o in t.obj["metadata"].get("ownerReferences") or [])
        ]

    def tasks(self, phase: str | Phase | None = None) -> list[Task]:
        """Its instances (SimulationTasks), by index; only those in `phase` when given."""
        tasks = self._instances()
        if phase is not None:
            tasks = [t for t in tasks if t.phase == str(phase)]
        return sorted(tasks, key=lambda t: int(t.obj["metadata"]["labels"][LABEL_INDEX]))

    def task(self, index: int) -> Task:
        """The instance with `index` (NotFoundError when it has no task yet)."""
        found = self._instances(index)
        if not found:
            raise NotFoundError(f"simbatch/{self.name} has no task for index {index} (yet)")
        return found[0]

    def kill(self) -> None:
        """Stop every instance; the batch ends `Killed`."""
        operations.set_spec(self.client, BATCHES, self.namespace, self.name, kill=True)

    def hold(self) -> None:
        """Start no new instance until released."""
        operations.set_spec(self.client, BATCHES, self.namespace, self.name, hold=True)

    def release(self) -> None:
        """Let a held batch go on."""
        operations.set_spec(self.client, BATCHES, self.namespace, self.name, hold=False)

    def retry_failed(self) -> int:
        """Re-run only the instances that did not end in `Success` (raises `spec.retry`,
        without losing a concurrent raise); returns the new counter."""
        return operations.raise_retry(self.client, BATCHES, self.namespace, self.name)
