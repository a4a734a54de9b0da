"""MachineGroups as tasks see them: state, quota admission in FIFO order, placement checks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

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


class GroupBook:
    """Reads groups, tasks and nodes from the caches to answer for one task at a time."""

    def __init__(self, tasks: Store, groups: Store, nodes: Store, jobs: Store) -> None:
        self.tasks = tasks
        self.groups = groups
        self.nodes = nodes
        self.jobs = jobs
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

    def waiting_tasks(self, group: str) -> list[Key]:
        """Tasks queued for `group` (no Job yet)."""
        return [obj_key(t) for t in self.tasks.objects.values() if queued_for(t, group)]

    def _holders(self, group: str) -> set[Key]:
        """Tasks holding a slot: a Job of theirs on the group is not finished, or their status
        names a Job that is being created (not in the cache yet)."""
        holders: set[Key] = set()
        for task in self.tasks.objects.values():
            status = task.get("status") or {}
            uid = (task.get("metadata") or {}).get("uid")
            jobs = [
                j
                for j in self.jobs.by("task", uid)
                if ((j.get("metadata") or {}).get("labels") or {}).get(names.LABEL_MACHINE_GROUP)
                == group
            ]
            if any(not job_finished(j) for j in jobs) or (
                status.get("machineGroup") == group
                and status.get("jobName")
                and parse_phase(status.get("phase")) in _HOLDS_SLOT
                and not any(
                    (j.get("metadata") or {}).get("name") == status["jobName"] for j in jobs
                )
            ):
                holders.add(obj_key(task))
        return holders

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

        reserved = self._reserved.setdefault(name, set())
        holders = self._holders(name)
        reserved -= holders  # Their status shows the Job now.
        reserved.intersection_update(
            k
            for k in list(reserved)
            if (t := self.tasks.get(k)) is not None and queued_for(t, name)
        )
        active = len((holders | reserved) - {key})
        if key in holders:
            return GroupView(name=name, obj=group, state=state, unplaceable=unplaceable)
        queue = sorted(
            (
                t
                for t in self.tasks.objects.values()
                if queued_for(t, name) and obj_key(t) not in reserved
            ),
            key=_waiting_since,
        )
        position = next((i + 1 for i, t in enumerate(queue) if obj_key(t) == key), len(queue) + 1)
        free = int(quota) - active
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


def group_status(group: Obj, nodes: list[Obj], tasks: list[Obj], now: datetime) -> dict[str, Any]:
    """The status of a MachineGroup from its nodes and the tasks placed on it (pure)."""
    spec = group.get("spec") or {}
    meta = group.get("metadata") or {}
    old = dict(group.get("status") or {})
    name = str(meta.get("name"))
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
    running = sum(
        1
        for t in tasks
        if (t.get("status") or {}).get("machineGroup") == name
        and parse_phase((t.get("status") or {}).get("phase")) in RUNNING
    )
    queued = sum(1 for t in tasks if queued_for(t, name))
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
