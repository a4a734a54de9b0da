"""The batch controller's act part, with a fake API: an instance's event enqueues only its
batch, a name taken by another owner is reported and never adopted, one already ours is
taken as made, and the status is written at most once a second while only counts move."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from simtask import names
from simtask.batchcontroller import BatchController
from simtask.batchdecide import instance_task
from simtask.conditions import find_condition
from simtask.informers import Store
from simtask.kube import ApiError
from simtask.workqueue import WorkQueue

Obj = dict[str, Any]


class FakeKube:
    """Answers creates, patches and gets from a dict of tasks; records every write."""

    def __init__(self, existing: dict[str, Obj] | None = None) -> None:
        self.tasks: dict[str, Obj] = dict(existing or {})
        self.writes: list[tuple[str, str]] = []
        self.rv = 1000
        self.batch: Obj = {}

    def _stamp(self, obj: Obj) -> Obj:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        return obj

    async def create(self, path: str, body: Obj, *, resource: str) -> Obj:
        self.writes.append(("create", body["metadata"]["name"]))
        name = body["metadata"]["name"]
        if name in self.tasks:
            raise ApiError(409, "AlreadyExists", f"{name} exists")
        self.tasks[name] = self._stamp(body)
        return self.tasks[name]

    async def get(self, path: str, *, resource: str) -> Obj | None:
        return self.tasks.get(path.rsplit("/", 1)[-1])

    async def merge_patch(self, path: str, body: Obj, *, resource: str) -> Obj:
        self.writes.append(("patch", path))
        if resource == "simulationtasks":
            name = path.rsplit("/", 1)[-1]
            task = self._stamp(self.tasks[name])
            task["spec"] = {**task["spec"], **body.get("spec", {})}
            self.tasks[name] = task
            return task
        batch = self._stamp(self.batch)
        batch["status"] = {**(self.batch.get("status") or {}), **body["status"]}
        self.batch = batch
        return batch


def batch_obj(count: int = 3) -> Obj:
    return {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationBatch",
        "metadata": {
            "name": "sweep",
            "namespace": "lab",
            "uid": "b-uid",
            "generation": 1,
            "resourceVersion": "5",
        },
        "spec": {"template": {"image": "sim:1"}, "count": count},
    }


def controller(kube: FakeKube, batch: Obj) -> tuple[BatchController, Store, Store, list[Any]]:
    batches, tasks = Store(), Store({"uid": lambda o: [o["metadata"].get("uid")]})
    batches.put(batch)
    kube.batch = batch
    woken: list[Any] = []
    c = BatchController(kube, batches, tasks, WorkQueue(), woken.append)  # type: ignore[arg-type]
    for obj in kube.tasks.values():
        tasks.put(obj)
    return c, batches, tasks, woken


def test_an_instance_event_enqueues_its_batch_only() -> None:
    async def main() -> None:
        kube = FakeKube()
        c, _, tasks, _ = controller(kube, batch_obj())
        task = instance_task(batch_obj(), 0, {})
        task["metadata"].update(uid="t0", resourceVersion="9")
        tasks.put(task)
        other = {
            "metadata": {"name": "plain", "namespace": "lab", "uid": "p", "resourceVersion": "3"}
        }
        tasks.put(other)
        await asyncio.sleep(0.3)
        assert len(c.queue) == 1
        assert await c.queue.get() == ("lab", "sweep")
        assert [t["metadata"]["name"] for t in tasks.by("batch", "b-uid")] == ["sweep-0"]

    asyncio.run(main())


def test_creates_and_a_name_taken_by_another_owner() -> None:
    async def main() -> None:
        stranger = {
            "metadata": {"name": "sweep-1", "namespace": "lab", "uid": "x", "resourceVersion": "1"}
        }
        ours_already = instance_task(batch_obj(), 2, {})
        ours_already["metadata"].update(uid="t2", resourceVersion="2")
        kube = FakeKube({"sweep-1": stranger})
        c, batches, tasks, woken = controller(kube, batch_obj())
        kube.tasks["sweep-2"] = ours_already  # Made by another replica: not in our cache yet.
        await c.reconcile(("lab", "sweep"))
        assert sorted(n for verb, n in kube.writes if verb == "create") == [
            "sweep-0",
            "sweep-1",
            "sweep-2",
        ]
        assert c.taken == {"b-uid": {1}}
        assert tasks.get(("lab", "sweep-1")) is stranger  # Not adopted, not replaced.
        assert tasks.get(("lab", "sweep-2")) is not None  # Ours: taken as made.
        assert woken == [("lab", "sweep-0")]
        # The next pass reports it and does not try to make it again.
        await c.reconcile(("lab", "sweep"))
        stalled = find_condition(batches.get(("lab", "sweep")), "Stalled")
        assert stalled is not None and stalled["reason"] == "InstanceNameTaken"
        assert sum(1 for verb, n in kube.writes if verb == "create" and n == "sweep-1") == 1
        assert names.instance_name("sweep", 1) in stalled["message"]

    asyncio.run(main())


def test_status_writes_are_batched_phase_changes_are_not() -> None:
    async def main() -> None:
        kube = FakeKube()
        c, batches, tasks, _ = controller(kube, batch_obj(count=3))
        key = ("lab", "sweep")
        await c.reconcile(key)  # Creates 3, writes Submitted.
        status_writes = [w for w in kube.writes if w[0] == "patch"]
        assert len(status_writes) == 1

        def move(index: int, phase: str) -> None:
            task = copy.deepcopy(tasks.get(("lab", f"sweep-{index}")))
            assert task is not None
            task["metadata"]["resourceVersion"] = str(int(task["metadata"]["resourceVersion"]) + 1)
            task["status"] = {"phase": phase}
            if phase == "Success":
                task["status"]["conditions"] = [{"type": "Succeeded", "status": "True"}]
            tasks.put(task)

        move(0, "Started")  # Submitted -> Running: a phase change, written at once.
        await c.reconcile(key)
        assert len([w for w in kube.writes if w[0] == "patch"]) == 2
        move(1, "Started")  # Only counts move: not within the second.
        await c.reconcile(key)
        assert len([w for w in kube.writes if w[0] == "patch"]) == 2
        for i in range(3):
            move(i, "Success")  # Success: the terminal phase is written at once.
        await c.reconcile(key)
        assert len([w for w in kube.writes if w[0] == "patch"]) == 3
        batch = batches.get(key)
        assert batch is not None and batch["status"]["phase"] == "Success"

    asyncio.run(main())


def test_a_patched_instance_is_handed_to_the_task_controller() -> None:
    """The patch's own watch event looks like an echo to the task controller's listener, so
    the batch controller wakes the task itself (a kill reached an instance 20 s late)."""

    async def main() -> None:
        batch = batch_obj(count=1)
        task = instance_task(batch, 0, {})
        task["metadata"].update(uid="t0", resourceVersion="9")
        task["status"] = {"phase": "ComputationStarted"}
        kube = FakeKube({"sweep-0": task})
        batch["spec"]["kill"] = True
        c, _, tasks, woken = controller(kube, batch)
        await c.reconcile(("lab", "sweep"))
        assert ("patch", "/apis/simtask.dev/v1alpha1/namespaces/lab/simulationtasks/sweep-0") in (
            kube.writes
        )
        patched = tasks.get(("lab", "sweep-0"))
        assert patched is not None and patched["spec"]["kill"] is True
        assert woken == [("lab", "sweep-0")]

    asyncio.run(main())
