"""Follow objects through watches (never by polling): every change as it happens.

Each watched stream runs in a daemon thread that feeds one queue, so the caller's thread
stays interruptible (Ctrl-C) and a deadline is a plain `queue.get` timeout.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from simtask import GROUP, VERSION
from simtask.sdk.client import Client, Kind, NotFoundError, SimTaskError, api_errors

#: How long one watch request lasts on the server before it is renewed; a watcher thread
#: that is no longer wanted ends within this time.
WATCH_SECONDS = 60


@dataclass(frozen=True)
class Deleted:
    """An object that was deleted while it was followed."""

    namespace: str
    name: str


@dataclass(frozen=True)
class Stream:
    """What one watch follows: a kind in a namespace, narrowed by selectors."""

    kind: Kind
    namespace: str
    field_selector: str | None = None
    label_selector: str | None = None


def _pump(client: Client, stream: Stream, out: queue.Queue[Any], stop: threading.Event) -> None:
    kwargs: dict[str, Any] = {}
    if stream.field_selector:
        kwargs["field_selector"] = stream.field_selector
    if stream.label_selector:
        kwargs["label_selector"] = stream.label_selector
    lister = client.custom.list_namespaced_custom_object
    args = (GROUP, VERSION, stream.namespace, stream.kind.plural)
    try:
        while not stop.is_set():
            listing = client.list(stream.kind, stream.namespace, **kwargs)
            for item in listing.get("items") or []:
                out.put(item)
            version = (listing.get("metadata") or {}).get("resourceVersion")
            w = watch.Watch()
            try:
                while not stop.is_set():
                    for event in w.stream(
                        lister,
                        *args,
                        resource_version=version,
                        timeout_seconds=WATCH_SECONDS,
                        allow_watch_bookmarks=True,
                        **kwargs,
                    ):
                        if stop.is_set():
                            w.stop()
                            return
                        if not event:  # a blank line of the stream
                            continue
                        obj = event["object"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            out.put(obj)
                        elif event["type"] == "DELETED":
                            meta = obj.get("metadata") or {}
                            out.put(Deleted(str(meta.get("namespace")), str(meta.get("name"))))
                    version = w.resource_version
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: too old a version; list again
                    raise
    except SimTaskError as exc:
        out.put(exc)
    except Exception as exc:  # handed to the caller's thread, which raises it
        try:
            with api_errors(f"watching {stream.kind.plural} in namespace {stream.namespace}"):
                raise exc
        except SimTaskError as err:
            out.put(err)


def follow(
    client: Client, streams: list[Stream], *, deadline: float | None = None
) -> Iterator[dict[str, Any] | Deleted]:
    """Every version of the objects of `streams`, as they change (the current one first).

    Raises TimeoutError at `deadline` (a `time.monotonic()` value), and the SimTaskError of
    a watch that fails. The watches stop when the iterator is closed.
    """
    out: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    for stream in streams:
        threading.Thread(
            target=_pump, args=(client, stream, out, stop), daemon=True, name="simtask-watch"
        ).start()
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            try:
                item = out.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError from None
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()


def by_name(kind: Kind, namespace: str, name: str) -> Stream:
    """A stream of one object."""
    return Stream(kind, namespace, field_selector=f"metadata.name={name}")


def wait_until(
    client: Client,
    kind: Kind,
    namespace: str,
    name: str,
    done: Callable[[dict[str, Any]], bool],
    *,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Follow one object until `done(obj)`; return it. NotFoundError if it is deleted."""
    for item in follow(client, [by_name(kind, namespace, name)], deadline=deadline):
        if isinstance(item, Deleted):
            raise NotFoundError(f"{kind.ref(name)} in namespace {namespace} was deleted")
        if done(item):
            return item
    raise AssertionError("unreachable")  # follow() never ends by itself
