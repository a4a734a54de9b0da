"""The SimulationBatch controller: observe a batch's instances from the task cache, decide
(`simtask.batchdecide`), create or patch instance tasks, write the summary status.

It shares the operator's runtime: the SimulationTask cache (indexed by the batch that owns
each task), a work queue of batch keys, the Kube client and the one asyncio loop. An event
on an instance enqueues only its own batch, and a pass costs O(the batch's instances).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

from simtask import GROUP, VERSION, metrics, names
from simtask.batchdecide import (
    BATCH_PHASES,
    TERMINAL,
    BatchDecision,
    CreateInstance,
    DeleteBatch,
    Instances,
    PatchInstance,
    decide_batch,
)
from simtask.informers import Key, Obj, Store, obj_key, obj_uid, same_version
from simtask.kube import ApiError, Kube
from simtask.workqueue import WorkQueue

logger = logging.getLogger(__name__)

API = f"/apis/{GROUP}/{VERSION}"

#: A batch's status is written at most once per this many seconds while its instances move
#: (its phase changing, to a terminal one say, is written at once).
STATUS_EVERY = 1.0
#: Instance events within this long of each other make one pass of their batch.
PASS_DELAY = 0.2
#: Instance creates and patches in flight at once, per pass.
CONCURRENT_WRITES = 16


def batch_owner(task: Obj) -> tuple[str, str] | None:
    """(uid, name) of the SimulationBatch that controls `task`, if one does."""
    for ref in (task.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == "SimulationBatch":
            return str(ref.get("uid")), str(ref.get("name"))
    return None


def batch_uid_index(task: Obj) -> list[Hashable]:
    """Index of the task cache: the UID of the batch that owns the task."""
    owner = batch_owner(task)
    return [owner[0]] if owner else []


def instance_index(task: Obj) -> int | None:
    value = ((task.get("metadata") or {}).get("labels") or {}).get(names.LABEL_INDEX)
    try:
        return int(str(value))
    except ValueError:
        return None


def batch_path(namespace: str, name: str, sub: str = "") -> str:
    return f"{API}/namespaces/{namespace}/simulationbatches/{name}{sub}"


def task_path(namespace: str, name: str = "") -> str:
    base = f"{API}/namespaces/{namespace}/simulationtasks"
    return f"{base}/{name}" if name else base


class BatchController:
    """Reconciles SimulationBatches from the shared caches."""

    def __init__(
        self,
        kube: Kube,
        batches: Store,
        tasks: Store,
        queue: WorkQueue,
        wake_task: Callable[[Key], None],
    ) -> None:
        self.kube = kube
        self.batches = batches
        self.tasks = tasks
        self.queue = queue
        self.wake_task = wake_task
        #: Instance indexes whose name a task of another owner holds, by batch UID.
        self.taken: dict[str, set[int]] = {}
        #: When each batch's status was last written (monotonic).
        self._written: dict[Key, float] = {}
        tasks.add_index("batch", batch_uid_index)
        tasks.subscribe(self._task_changed)

    # -- events

    def _task_changed(self, old: Obj | None, new: Obj | None) -> None:
        """An instance changed (whoever wrote it, our own task controller included): its
        batch, and only it, looks again shortly."""
        obj = new if new is not None else old
        owner = batch_owner(obj or {})
        if owner is not None:
            ns = str(((obj or {}).get("metadata") or {}).get("namespace") or "")
            self.queue.add_after((ns, owner[1]), PASS_DELAY)

    def on_batch(self, etype: str, body: Obj, prev: Obj | None) -> None:
        """Listener of the batch informer."""
        key = obj_key(body)
        if etype == "DELETED":
            self.queue.forget(key)
            self._written.pop(key, None)
            self.taken.pop(obj_uid(body), None)
            return
        if prev is not None and same_version(prev, body):
            return  # The echo of our own status write.
        self.queue.add(key)

    # -- one pass

    async def reconcile(self, key: Key) -> None:
        """One pass over one batch: its instances from the cache, decide, act, write."""
        batch = self.batches.get(key)
        if batch is None or (batch.get("metadata") or {}).get("deletionTimestamp"):
            return
        uid = obj_uid(batch)
        by_index: dict[int, Obj] = {}
        for task in self.tasks.by("batch", uid):
            index = instance_index(task)
            if index is not None:
                by_index[index] = task
        taken = self._still_taken(batch)
        decision = decide_batch(batch, Instances(by_index, frozenset(taken)), datetime.now(UTC))
        # Act before writing the status: what the status summarises is the instances, and a
        # create or patch lost to a crash is made again by the next pass (names and the
        # batch-retry annotation make both idempotent).
        deleted = await self._act(batch, decision)
        if deleted:
            return
        await self._write_status(key, batch, decision)
        if decision.requeue_after is not None:
            self.queue.add_after(key, decision.requeue_after)

    def _still_taken(self, batch: Obj) -> set[int]:
        """Indexes reported taken whose name still belongs to another owner's task."""
        uid, meta = obj_uid(batch), batch["metadata"]
        taken = self.taken.get(uid, set())
        for index in list(taken):
            name = names.instance_name(str(meta["name"]), index)
            task = self.tasks.get((str(meta["namespace"]), name))
            owner = batch_owner(task) if task is not None else None
            if task is None or (owner is not None and owner[0] == uid):
                taken.discard(index)
        return taken

    async def _act(self, batch: Obj, decision: BatchDecision) -> bool:
        """Create and patch instances; True when the batch itself was deleted (TTL)."""
        meta = batch["metadata"]
        ns = str(meta["namespace"])
        gate = asyncio.Semaphore(CONCURRENT_WRITES)

        async def one(action: CreateInstance | PatchInstance) -> None:
            async with gate:
                if isinstance(action, CreateInstance):
                    await self._create(batch, action)
                else:
                    updated = await self.kube.merge_patch(
                        task_path(ns, action.name), action.patch, resource="simulationtasks"
                    )
                    # Its watch event will come with this version and be taken for an echo
                    # of the task controller's own write: that controller is told here.
                    self.tasks.apply_write(updated)
                    self.wake_task(obj_key(updated))

        writes = [a for a in decision.actions if isinstance(a, CreateInstance | PatchInstance)]
        results = await asyncio.gather(*(one(a) for a in writes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        if any(isinstance(a, DeleteBatch) for a in decision.actions):
            await self.kube.delete(
                batch_path(ns, str(meta["name"])),
                resource="simulationbatches",
                uid=str(meta["uid"]),
                resource_version=str(meta["resourceVersion"]),
            )
            return True
        return False

    async def _create(self, batch: Obj, action: CreateInstance) -> None:
        """Create one instance; a task of that name must be this batch's own, else the name
        is reported taken, never adopted."""
        meta = batch["metadata"]
        ns, name = str(meta["namespace"]), str(action.task["metadata"]["name"])
        try:
            created = await self.kube.create(task_path(ns), action.task, resource="simulationtasks")
        except ApiError as exc:
            if exc.code != 409:
                raise
            existing = await self.kube.get(task_path(ns, name), resource="simulationtasks")
            if existing is None:
                self.queue.add_after(obj_key(batch), 0.5)  # Gone meanwhile: create again.
                return
            owner = batch_owner(existing)
            if owner is not None and owner[0] == obj_uid(batch):
                self.tasks.put(existing)  # Ours: made before a restart or by another replica.
                return
            self.taken.setdefault(obj_uid(batch), set()).add(action.index)
            logger.warning(
                "%s/%s: instance %d: a SimulationTask named %s exists and is not this "
                "batch's; not adopted",
                ns,
                meta["name"],
                action.index,
                name,
            )
            self.queue.add(obj_key(batch))
            return
        # The watch event of this create arrives with the same version and is taken for an
        # echo: the task controller is told here.
        self.tasks.put(created)
        self.wake_task(obj_key(created))

    async def _write_status(self, key: Key, batch: Obj, decision: BatchDecision) -> None:
        """Write the status if it changed: at once when its headline (phase, reason, condition
        statuses) moves, else at most once per STATUS_EVERY seconds (the pass is then made
        again when the time has come)."""
        old = batch.get("status") or {}
        new = decision.status
        if new == old:
            return
        now = time.monotonic()
        last = self._written.get(key)
        if _headline(old) == _headline(new) and last is not None:
            wait = STATUS_EVERY - (now - last)
            if wait > 0:
                self.queue.add_after(key, wait)
                return
        patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
        for gone in set(old) - set(new):
            patch[gone] = None
        meta = batch["metadata"]
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"], "uid": meta["uid"]},
            "status": patch,
        }
        try:
            updated = await self.kube.merge_patch(
                batch_path(str(meta["namespace"]), str(meta["name"]), "/status"),
                body,
                resource="simulationbatches",
            )
        except ApiError as exc:
            if exc.code == 404:
                return
            raise
        self._written[key] = time.monotonic()
        self.batches.apply_write(updated)
        if new.get("phase") != old.get("phase") and new.get("phase") in TERMINAL:
            logger.info("%s/%s: %s: %s", *key, new.get("phase"), new.get("message"))

    # -- metrics

    async def gauges(self) -> None:
        """`simtask_batches{phase}` every 5 seconds."""
        while True:
            counts = dict.fromkeys(BATCH_PHASES, 0)
            for batch in list(self.batches.objects.values()):
                phase = str((batch.get("status") or {}).get("phase") or "Submitted")
                counts[phase] = counts.get(phase, 0) + 1
            for phase, n in counts.items():
                metrics.BATCHES.labels(phase).set(n)
            await asyncio.sleep(5)


def _headline(status: Obj) -> tuple[Any, ...]:
    """What a status write must not wait for: the phase, the reason and each condition's
    status (the counts, sums and messages can)."""
    conditions = tuple((c.get("type"), c.get("status")) for c in status.get("conditions") or ())
    return status.get("phase"), status.get("reason"), conditions
