"""The MachineGroup controller: status, the finalizer that stops tasks first, expiry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from simtask import GROUP, VERSION
from simtask.informers import Key, Obj
from simtask.kube import Kube
from simtask.lifecycle import is_terminal, parse_phase
from simtask.machinegroups import GROUP_FINALIZER, GroupBook, group_state, group_status
from simtask.timestamps import parse_ts
from simtask.workqueue import WorkQueue


class GroupController:
    """Reconciles one MachineGroup at a time from the shared caches."""

    def __init__(
        self, kube: Kube, book: GroupBook, queue: WorkQueue, wake_task: Callable[[Key], None]
    ) -> None:
        self.kube = kube
        self.book = book
        self.queue = queue
        self.wake_task = wake_task

    async def reconcile(self, name: str) -> None:
        """Status, finalizer and expiry of one MachineGroup."""
        group = self.book.groups.get(("", name))
        if group is None:
            return
        meta = group["metadata"]
        path = f"/apis/{GROUP}/{VERSION}/machinegroups/{name}"
        finalizers = list(meta.get("finalizers") or [])
        now = datetime.now(UTC)
        if meta.get("deletionTimestamp"):
            members = [self.book.tasks.get(k) for k in self.book.tasks_of(name)]
            tasks = [t for t in members if t is not None]
            if GROUP_FINALIZER in finalizers and not self._busy(name, tasks):
                finalizers.remove(GROUP_FINALIZER)
                await self.kube.merge_patch(
                    path,
                    {
                        "metadata": {
                            "finalizers": finalizers,
                            "resourceVersion": meta["resourceVersion"],
                        }
                    },
                    resource="machinegroups",
                )
            elif GROUP_FINALIZER in finalizers:
                self.queue.add_after(name, 1.0)
            return
        if GROUP_FINALIZER not in finalizers:
            updated = await self.kube.merge_patch(
                path,
                {
                    "metadata": {
                        "finalizers": [*finalizers, GROUP_FINALIZER],
                        "resourceVersion": meta["resourceVersion"],
                    }
                },
                resource="machinegroups",
            )
            self.book.groups.apply_write(updated)
            group = updated
        status = group_status(
            group,
            list(self.book.nodes.objects.values()),
            running=self.book.running(name),
            queued=self.book.queued(name),
            now=now,
        )
        if status != (group.get("status") or {}):
            updated = await self.kube.merge_patch(
                path + "/status",
                {
                    "metadata": {"resourceVersion": group["metadata"]["resourceVersion"]},
                    "status": status,
                },
                resource="machinegroups",
            )
            self.book.groups.apply_write(updated)
        if group_state(group, now) != "Active":
            for key in self.book.tasks_of(name):
                task = self.book.tasks.get(key)
                phase = parse_phase(((task or {}).get("status") or {}).get("phase"))
                if task is not None and not is_terminal(phase):
                    self.wake_task(key)
        elif status.get("expiresAt"):
            expires = parse_ts(status["expiresAt"])
            if expires is not None:
                self.queue.add_after(name, max((expires - now).total_seconds(), 0) + 0.1)

    def _busy(self, name: str, tasks: list[Obj]) -> bool:
        """Whether a task of the group still has to be stopped before the group may go."""
        for task in tasks:
            status = task.get("status") or {}
            phase = parse_phase(status.get("phase"))
            if not is_terminal(phase):
                return True
        return bool(self.book.jobs.by("unfinished", name))
