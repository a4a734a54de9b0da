"""MachineGroups as tasks see them: state, quota admission in FIFO order, placement checks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from simtask.decide import GroupView, parse_ts, placement_group
from simtask.durations import parse_duration
from simtask.informers import Key, Obj, Store, obj_key
from simtask.lifecycle import RUNNING, Phase, parse_phase

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


def _waiting_since(task: Obj) -> tuple[str, str]:
    status = task.get("status") or {}
    attempt = int(status.get("attempt") or 1)
    for h in reversed(status.get("history") or []):
        if h.get("phase") == Phase.SUBMITTED and int(h.get("attempt") or 0) == attempt:
            return (str(h.get("time")), str(task["metadata"]["name"]))
    return (str(task["metadata"].get("creationTimestamp")), str(task["metadata"]["name"]))


class GroupBook:
    """Reads groups, tasks and nodes from the caches to answer for one task at a time."""

    def __init__(self, tasks: Store, groups: Store, nodes: Store) -> None:
        self.tasks = tasks
        self.groups = groups
        self.nodes = nodes
        #: Tasks admitted in memory whose status does not show their Job yet, by group.
        self._reserved: dict[str, set[Key]] = {}

    def forget(self, key: Key) -> None:
        for keys in self._reserved.values():
            keys.discard(key)

    def nodes_changed(self) -> None:
        """Node capacity may have changed (nothing cached yet)."""

    def tasks_of(self, group: str) -> list[Key]:
        """Tasks that name `group` as their group or fallback."""
        out = []
        for task in self.tasks.objects.values():
            spec = task.get("spec") or {}
            if group in (spec.get("machineGroup"), spec.get("fallbackMachineGroup")):
                out.append(obj_key(task))
        return out

    def _holds_slot(self, task: Obj, group: str) -> bool:
        status = task.get("status") or {}
        return (
            status.get("machineGroup") == group
            and bool(status.get("jobName"))
            and parse_phase(status.get("phase")) in _HOLDS_SLOT
        )

    def _waiting(self, task: Obj, group: str) -> bool:
        status = task.get("status") or {}
        spec = task.get("spec") or {}
        return (
            placement_group(spec, _spot_preemptions(task)) == group
            and parse_phase(status.get("phase")) in (None, Phase.SUBMITTED)
            and not status.get("jobName")
            and not spec.get("hold")
            and not spec.get("kill")
        )

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
        if group is None or state != "Active":
            return GroupView(name=name, obj=group, state=state)
        key = obj_key(task)
        gspec = group.get("spec") or {}
        unplaceable = self._unplaceable(spec, gspec, name)
        quota = gspec.get("maxConcurrentTasks")
        if quota is None:
            return GroupView(name=name, obj=group, state=state, unplaceable=unplaceable)

        reserved = self._reserved.setdefault(name, set())
        holders = {obj_key(t) for t in self.tasks.objects.values() if self._holds_slot(t, name)}
        reserved -= holders  # Their status shows the Job now.
        reserved.intersection_update(
            k for k in list(reserved) if (t := self.tasks.get(k)) is not None and self._waiting(t, name)
        )
        active = len((holders | reserved) - {key})
        if key in holders:
            return GroupView(name=name, obj=group, state=state, unplaceable=unplaceable)
        queue = sorted(
            (t for t in self.tasks.objects.values() if self._waiting(t, name) and obj_key(t) not in reserved),
            key=_waiting_since,
        )
        position = next((i + 1 for i, t in enumerate(queue) if obj_key(t) == key), len(queue) + 1)
        free = int(quota) - active
        admits = key in reserved or position <= free
        if admits:
            reserved.add(key)
            return GroupView(name=name, obj=group, state=state, unplaceable=unplaceable)
        return GroupView(name=name, obj=group, state=state, admits=False,
                         queue_position=max(position - max(free, 0), 1), unplaceable=unplaceable)

    def _unplaceable(self, spec: Mapping[str, Any], gspec: Mapping[str, Any], name: str) -> str | None:
        gpus = int((spec.get("resources") or {}).get("gpu") or 0)
        if not gpus:
            return None
        selector = gspec.get("nodeSelector") or {}
        members = [n for n in self.nodes.objects.values() if selects(n, selector)]
        if not members:
            return None
        most = max(int(((n.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", 0))
                   for n in members)
        if gpus > most:
            return (f"asks for {gpus} GPUs but the largest node of MachineGroup {name!r} has {most}; "
                    f"it can never be scheduled there")
        return None
