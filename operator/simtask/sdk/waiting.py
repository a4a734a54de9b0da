"""Wait for tasks and batches to end, reporting each status change once, through watches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from simtask.sdk.client import BATCHES, Client, Kind
from simtask.sdk.outcome import Change, batch_change, final_phase, task_changes
from simtask.sdk.watching import Deleted, Stream, by_name, follow

#: Called with every status change as it happens.
OnChange = Callable[[Change], None]
#: What `wait_for` reports for an object deleted while it was waited for.
DELETED = "Deleted"
#: Above this many names in one namespace, one watch of the namespace replaces one per name.
_MAX_STREAMS_PER_NAMESPACE = 20


@dataclass(frozen=True)
class Ref:
    """One object to wait for."""

    kind: Kind
    namespace: str
    name: str


class WaitTimeout(TimeoutError):
    """The deadline came before every object ended; `finished` has those that did."""

    def __init__(self, finished: dict[Ref, str], pending: list[Ref]) -> None:
        super().__init__(f"{len(pending)} not finished: " + ", ".join(r.name for r in pending))
        self.finished = finished
        self.pending = pending


@dataclass
class _Tracker:
    """What has been reported of each object so far."""

    on_change: OnChange | None
    from_start: bool
    history_seen: dict[Ref, int] = field(default_factory=dict)
    batch_seen: dict[Ref, tuple[Any, ...]] = field(default_factory=dict)

    def see(self, ref: Ref, obj: dict[str, Any]) -> None:
        if ref.kind is BATCHES:
            change = batch_change(obj)
            key = (change.phase, change.counts)
            if self.batch_seen.get(ref) != key:
                self.batch_seen[ref] = key
                self._report([change])
            return
        history = (obj.get("status") or {}).get("history") or []
        if ref not in self.history_seen:
            # Waiting on a task already under way: its current state, then what follows.
            self.history_seen[ref] = 0 if self.from_start else max(len(history) - 1, 0)
        changes = task_changes(obj, self.history_seen[ref])
        self.history_seen[ref] = max(self.history_seen[ref], len(history))
        self._report(changes)

    def _report(self, changes: list[Change]) -> None:
        if self.on_change is not None:
            for change in changes:
                self.on_change(change)


def _streams(refs: Iterable[Ref]) -> list[Stream]:
    groups: dict[tuple[Kind, str], list[Ref]] = {}
    for ref in refs:
        groups.setdefault((ref.kind, ref.namespace), []).append(ref)
    streams = []
    for (kind, namespace), members in groups.items():
        if len(members) > _MAX_STREAMS_PER_NAMESPACE:
            streams.append(Stream(kind, namespace))
        else:
            streams += [by_name(kind, namespace, r.name) for r in members]
    return streams


def wait_for(
    client: Client,
    refs: list[Ref],
    *,
    timeout: float | None = None,
    on_change: OnChange | None = None,
    from_start: bool = False,
) -> dict[Ref, str]:
    """Follow `refs` until each has ended; return the phase each ended in (`DELETED` for one
    deleted meanwhile). Every status change is passed to `on_change` once, in order per
    object: all of a task's history when `from_start`, else from its current phase on.
    Raises WaitTimeout after `timeout` seconds; KeyboardInterrupt leaves everything as is.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    tracker = _Tracker(on_change, from_start)
    wanted = {(r.kind.kind, r.namespace, r.name): r for r in refs}
    finished: dict[Ref, str] = {}
    # Read each once first, so an unknown name fails at once instead of waiting for it.
    for ref in refs:
        obj = client.get(ref.kind, ref.namespace, ref.name)
        tracker.see(ref, obj)
        phase = final_phase(ref.kind.kind, obj)
        if phase is not None:
            finished[ref] = phase
    if len(finished) == len(wanted):
        return finished
    try:
        streams = _streams(r for r in refs if r not in finished)
        for item in follow(client, streams, deadline=deadline):
            if isinstance(item, Deleted):
                for ref in refs:
                    if (ref.namespace, ref.name) == (item.namespace, item.name):
                        finished.setdefault(ref, DELETED)
            else:
                meta = item.get("metadata") or {}
                ref_or_none = wanted.get(
                    (str(item.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
                )
                if ref_or_none is None or ref_or_none in finished:
                    continue
                tracker.see(ref_or_none, item)
                phase = final_phase(ref_or_none.kind.kind, item)
                if phase is not None:
                    finished[ref_or_none] = phase
            if len(finished) == len(wanted):
                return finished
    except TimeoutError:
        raise WaitTimeout(finished, [r for r in refs if r not in finished]) from None
    raise AssertionError("unreachable")  # follow() never ends by itself
