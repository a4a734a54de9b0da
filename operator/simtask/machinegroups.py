"""MachineGroups as tasks see them: state, quota admission in FIFO order, placement checks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

from sortedcontainers import SortedList

from simtask import names
from simtask.conditions import condition
from simtask.decide import GroupView, job_finished
from simtask.durations import parse_duration
from simtask.informers import Key, Obj, Store, obj_key
from simtask.lifecycle import RUNNING, Phase, parse_phase
from simtask.preemption import is_spot_node, node_ready
from simtask.resubmission import placement_group
from simtask.timestamps import parse_ts, ts

#: Phases in which a task holds one of its group's slots (once it has a Job).
_HOLDS_SLOT = RUNNING | {Phase.SUBMITTED, Phase.PENDING_KILLED}


def group_state(group: Obj | None, now: datetime) -> str:
    """Active, Terminated, Expired, Deleted (being deleted), or Missing (no such object)."""
    if group is None:
        return "Missing"
    if (group.get("metadata") or {}).get("deletionTimestamp"):
        return "Deleted"
    spec = group.get("spec") or {}
    phase = (group.get("status") or {}).get("phase")
    if spec.get("terminate") or phase == "Terminated":
        return "Terminated"
    if phase == "Expired":
        return "Expired"
    ttl = spec.get("timeToLive")
    created = parse_ts((group.get("metadata") or {}).get("creationTimestamp"))
    if ttl and created is not None and now >= created + parse_duration(str(ttl)):
        return "Expired"
    return "Active"


def selects(node: Obj, selector: Mapping[str, str]) -> bool:
    """Whether a node carries every label of a nodeSelector."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _spot_preemptions(task: Obj) -> int:
    attempts = (task.get("status") or {}).get("attempts") or []
    return sum(1 for a in attempts if a.get("phase") == Phase.SPOT_PREEMPTED)


def queued_for(task: Obj, group: str) -> bool:
    """Whether the task waits for a slot of `group`: placed there, not started, no Job yet."""
    status = task.get("status") or {}
    spec = task.get("spec") or {}
    return (
        placement_group(spec, _spot_preemptions(task)) == group
        and parse_phase(status.get("phase")) in (None, Phase.SUBMITTED)
        and not status.get("jobName")
        and not spec.get("hold")
        and not spec.get("kill")
    )


def node_gpus(node: Obj) -> int:
    """The GPUs a node offers (its allocatable `nvidia.com/gpu`)."""
    return int(((node.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", 0))


def _waiting_since(task: Obj) -> tuple[str, str]:
    status = task.get("status") or {}
    attempt = int(status.get("attempt") or 1)
    for h in reversed(status.get("history") or []):
        if h.get("phase") == Phase.SUBMITTED and int(h.get("attempt") or 0) == attempt:
            return (str(h.get("time")), str(task["metadata"]["name"]))
    return (str(task["metadata"].get("creationTimestamp")), str(task["metadata"]["name"]))


def queued_group(task: Obj) -> str | None:
    """The group whose slot the task waits for, if it waits for one."""
    spec = task.get("spec") or {}
    group = placement_group(spec, _spot_preemptions(task))
    return group if group is not None and queued_for(task, group) else None


def _member_of(task: Obj) -> list[Hashable]:
    spec = task.get("spec") or {}
    return [g for g in {spec.get("machineGroup"), spec.get("fallbackMachineGroup")} if g]


def _claims(task: Obj) -> list[Hashable]:
    """The group whose slot the task's status says it holds (a Job named, not finished)."""
    status = task.get("status") or {}
    if (
        status.get("machineGroup")
        and status.get("jobName")
        and parse_phase(status.get("phase")) in _HOLDS_SLOT
    ):
        return [status["machineGroup"]]
    return []


def _running_on(task: Obj) -> list[Hashable]:
    status = task.get("status") or {}
    if status.get("machineGroup") and parse_phase(status.get("phase")) in RUNNING:
        return [status["machineGroup"]]
    return []


def _unfinished_on(job: Obj) -> list[Hashable]:
    group = ((job.get("metadata") or {}).get("labels") or {}).get(names.LABEL_MACHINE_GROUP)
    return [group] if group and not job_finished(job) else []


def _task_uid_label(obj: Obj) -> list[Hashable]:
    uid = ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_TASK_UID)
    return [uid] if uid else []


#: (submitted at, to the second; order of arrival; name; key).
_Entry = tuple[str, int, str, Key]


class GroupBook:
    """Quota admission and queue positions, kept incrementally from the caches' changes.

    Each group's queue is an ordered list (by the time its tasks were submitted, then name)
    updated as tasks change, and the slots held are read from indexes of tasks and Jobs,
    so answering for one task costs the same at 10 tasks and at 10,000.
    """

    def __init__(self, tasks: Store, groups: Store, nodes: Store, jobs: Store) -> None:
        self.tasks = tasks
        self.groups = groups
        self.nodes = nodes
        self.jobs = jobs
        tasks.add_index("uid", lambda o: [(o.get("metadata") or {}).get("uid")])
        tasks.add_index("member", _member_of)
        tasks.add_index("claims", _claims)
        tasks.add_index("running", _running_on)
        jobs.add_index("task", _task_uid_label)
        jobs.add_index("unfinished", _unfinished_on)
        #: Each group's queue, in order.
        self._queues: dict[str, SortedList[_Entry]] = {}
        #: Where each queued task stands: (group, its entry).
        self._entries: dict[Key, tuple[str, _Entry]] = {}
        #: Tasks admitted in memory whose status does not show their Job yet, by group.
        self._reserved: dict[str, set[Key]] = {}
        self._arrivals = 0
        for task in tasks.objects.values():
            self._task_changed(None, task)
        tasks.subscribe(self._task_changed)

    def _task_changed(self, old: Obj | None, new: Obj | None) -> None:
        key = obj_key(new or old or {})
        placed = self._entries.pop(key, None)
        if placed is not None:
            self._queues[placed[0]].discard(placed[1])
        group = queued_group(new) if new is not None else None
        if group is not None and new is not None:
            since, name = _waiting_since(new)
            # Timestamps are to the second: within one, first seen is first served (after a
            # restart, the list's order: by name).
            if placed is not None and placed[0] == group and placed[1][0] == since:
                arrival = placed[1][1]
            else:
                self._arrivals += 1
                arrival = self._arrivals
            entry = (since, arrival, name, key)
            self._queues.setdefault(group, SortedList()).add(entry)
            self._entries[key] = (group, entry)
        elif new is None:
            self.forget(key)

    def forget(self, key: Key) -> None:
        for keys in self._reserved.values():
            keys.discard(key)

    def tasks_of(self, group: str) -> set[Key]:
        """Tasks that name `group` as their group or fallback."""
        return self.tasks.keys_by("member", group)

    def queued(self, group: str) -> int:
        """How many tasks wait for a slot of `group`."""
        return len(self._queues.get(group, ()))

    def running(self, group: str) -> int:
        """How many tasks run on `group`."""
        return len(self.tasks.keys_by("running", group))

    def stale_positions(self, group: str) -> list[Key]:
        """Queued tasks of `group` whose status shows another queue position than theirs
        now, or that a free slot admits (one sweep of the queue, no pass per task)."""
        quota = self._quota(group)
        queue = self._queues.get(group)
        if quota is None or not queue:
            return []
        reserved = self._live_reservations(group)
        free = max(quota - len(self._holders(group) | reserved), 0)
        stale: list[Key] = []
        rank = 0
        for entry in queue:
            key = entry[3]
            if key in reserved:
                continue
            rank += 1
            task = self.tasks.get(key)
            shown = ((task or {}).get("status") or {}).get("queuePosition")
            if rank <= free or shown != max(rank - free, 1):
                stale.append(key)
        return stale

    def next_in_line(self, group: str) -> list[Key]:
        """The queued tasks that the free slots of `group` can admit now, in order."""
        quota = self._quota(group)
        queue = self._queues.get(group)
        if not queue:
            return []
        if quota is None:
            return [entry[3] for entry in queue]
        reserved = self._live_reservations(group)
        free = quota - len(self._holders(group) | reserved)
        out: list[Key] = []
        for entry in queue:
            if len(out) >= free:
                break
            if entry[3] not in reserved:
                out.append(entry[3])
        return out

    def _quota(self, group: str) -> int | None:
        obj = self.groups.get(("", group))
        quota = ((obj or {}).get("spec") or {}).get("maxConcurrentTasks")
        return None if quota is None else int(quota)

    def _holders(self, group: str) -> set[Key]:
        """Tasks holding a slot: a Job of theirs on the group is not finished, or their status
        names a Job that is being created (not in the cache yet)."""
        holders: set[Key] = set()
        for job in self.jobs.by("unfinished", group):
            for uid in _task_uid_label(job):
                holders |= self.tasks.keys_by("uid", uid)
        for key in self.tasks.keys_by("claims", group):
            if key in holders:
                continue
            claimant = self.tasks.get(key)
            if claimant is None:
                continue
            named = self.jobs.get((key[0], str((claimant.get("status") or {}).get("jobName"))))
            uid = (claimant.get("metadata") or {}).get("uid")
            if named is None or _task_uid_label(named) != [uid]:
                holders.add(key)
        return holders

    def _live_reservations(self, group: str) -> set[Key]:
        """Reservations still waiting for their status to show the Job."""
        reserved = self._reserved.setdefault(group, set())
        reserved.intersection_update(
            k for k in list(reserved) if (placed := self._entries.get(k)) and placed[0] == group
        )
        return reserved

    def view(self, task: Obj, now: datetime | None = None) -> GroupView | None:
        """The group the task's next attempt is placed on, with quota and placement answers."""
        now = now or datetime.now(UTC)
        spec = task.get("spec") or {}
        status = task.get("status") or {}
        phase = parse_phase(status.get("phase"))
        # A running attempt stays on the group it was placed on.
        name = status.get("machineGroup") if phase in RUNNING else None
        name = name or placement_group(spec, _spot_preemptions(task))
        if not name:
            return None
        group = self.groups.get(("", name))
        state = group_state(group, now)
        if state == "Missing" and phase in RUNNING:
            state = "Deleted"  # The task was placed on it, so it existed.
        if group is None or state != "Active":
            return GroupView(name=name, obj=group, state=state)
        key = obj_key(task)
        gspec = group.get("spec") or {}
        unplaceable = self._unplaceable(spec, gspec, name)
        quota = gspec.get("maxConcurrentTasks")
        if quota is None:
            return GroupView(name=name, obj=group, state=state, unplaceable=unplaceable)

        holders = self._holders(name)
        reserved = self._live_reservations(name)
        if key in holders:
            return GroupView(name=name, obj=group, state=state, unplaceable=unplaceable)
        active = len((holders | reserved) - {key})
        free = int(quota) - active
        placed = self._entries.get(key)
        queue = self._queues.get(name)
        if placed is None or placed[0] != name or queue is None:
            position = len(queue or ()) + 1  # Not queued (yet): behind everyone.
        else:
            ahead = queue.index(placed[1])
            ahead -= sum(
                1
                for k in reserved
                if (p := self._entries.get(k)) is not None and p[0] == name and p[1] < placed[1]
            )
            position = ahead + 1
        admits = key in reserved or position <= free
        if admits:
            reserved.add(key)
            return GroupView(name=name, obj=group, state=state, unplaceable=unplaceable)
        return GroupView(
            name=name,
            obj=group,
            state=state,
            admits=False,
            queue_position=max(position - max(free, 0), 1),
            unplaceable=unplaceable,
        )

    def _unplaceable(
        self, spec: Mapping[str, Any], gspec: Mapping[str, Any], name: str
    ) -> str | None:
        gpus = int((spec.get("resources") or {}).get("gpu") or 0)
        if not gpus:
            return None
        selector = gspec.get("nodeSelector") or {}
        members = [n for n in self.nodes.objects.values() if selects(n, selector)]
        if not members:
            return None
        most = max(node_gpus(n) for n in members)
        if gpus > most:
            return (
                f"asks for {gpus} GPUs but the largest node of MachineGroup {name!r} has {most}; "
                f"it can never be scheduled there"
            )
        return None


# ---------------------------------------------------------------- the group's own status

#: Keeps a deleted group until the operator has stopped its tasks.
GROUP_FINALIZER = "simtask.dev/machinegroup"


def group_status(
    group: Obj, nodes: list[Obj], *, running: int, queued: int, now: datetime
) -> dict[str, Any]:
    """The status of a MachineGroup from its nodes and the counts of its tasks (pure)."""
    spec = group.get("spec") or {}
    meta = group.get("metadata") or {}
    old = dict(group.get("status") or {})
    state = group_state(group, now)
    members = [n for n in nodes if selects(n, spec.get("nodeSelector") or {})]
    ready = [n for n in members if node_ready(n)]
    gpus = sum(node_gpus(n) for n in members)
    explicit = spec.get("spot")
    spot = (
        bool(explicit)
        if explicit is not None
        else bool(members)
        and all(is_spot_node((n.get("metadata") or {}).get("labels") or {}) for n in members)
    )
    phase = {"Active": "Active", "Expired": "Expired"}.get(state, "Terminated")
    status: dict[str, Any] = {
        "phase": phase,
        "nodes": len(members),
        "readyNodes": len(ready),
        "gpus": gpus,
        "spot": spot,
        "runningTasks": running,
        "queuedTasks": queued,
        "observedGeneration": int(meta.get("generation") or 0),
    }
    ttl = spec.get("timeToLive")
    created = parse_ts(meta.get("creationTimestamp"))
    if ttl and created is not None:
        status["expiresAt"] = ts(created + parse_duration(str(ttl)))
    if phase == "Active":
        reason, message = (
            ("NodesReady", f"{len(ready)} of {len(members)} nodes Ready")
            if ready
            else ("NoNodes", "no Ready node matches spec.nodeSelector; tasks wait in Submitted")
        )
    elif phase == "Expired":
        reason, message = "Expired", "spec.timeToLive ran out; the group's tasks were stopped"
    elif state == "Deleted":
        reason, message = "Deleted", "the group is being deleted; its tasks are stopped first"
    else:
        reason, message = "Terminated", "spec.terminate is true; the group's tasks were stopped"
    # A group that has been Terminated or Expired stays so (a terminal phase).
    if old.get("phase") in ("Terminated", "Expired") and phase == "Active":
        status["phase"] = old["phase"]
    gen = status["observedGeneration"]
    status["reason"], status["message"] = reason, message
    status["conditions"] = [
        condition(
            list(old.get("conditions") or []),
            "Ready",
            "True" if status["phase"] == "Active" and ready else "False",
            reason,
            message,
            gen,
            now,
        )
    ]
    return status
