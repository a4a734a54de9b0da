"""The tasks waiting for a MachineGroup's quota, in the order they will start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simtask.sdk.client import Client, default_client
from simtask.sdk.task import Task


def queued_group(obj: Mapping[str, Any]) -> str | None:
    """The MachineGroup a task waits for, or None when it is not in a queue."""
    status = obj.get("status") or {}
    if status.get("phase") != "Submitted" or status.get("queuePosition") is None:
        return None
    group = status.get("machineGroup") or (obj.get("spec") or {}).get("machineGroup")
    return str(group) if group else None


def queue_order(objs: list[Mapping[str, Any]], group: str | None = None) -> list[Mapping[str, Any]]:
    """The queued ones of `objs` (of `group` only, when given), by group, then position."""
    queued = [o for o in objs if queued_group(o) and (group is None or queued_group(o) == group)]
    return sorted(queued, key=lambda o: (queued_group(o), int(o["status"]["queuePosition"])))


def queue(
    group: str | None = None,
    *,
    namespace: str | None = None,
    all_namespaces: bool = False,
    client: Client | None = None,
) -> list[Task]:
    """The tasks waiting for a MachineGroup's quota (of `group` only, when given), next to
    start first. Positions count across namespaces; only what the user may list is shown."""
    client = client or default_client()
    tasks = Task.list(namespace, all_namespaces=all_namespaces, client=client)
    by_id = {id(t.obj): t for t in tasks}
    return [by_id[id(o)] for o in queue_order([t.obj for t in tasks], group)]
