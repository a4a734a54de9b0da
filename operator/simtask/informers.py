"""In-memory caches fed by list+watch: every kind the operator reads comes in this way.

An `Informer` lists, then watches from the list's resourceVersion with bookmarks, a server
timeout and a client read timeout (a watch that goes silent is a failure, not a quiet
cluster); it resumes from the last resourceVersion it saw and lists again when that has
expired, emitting the deletions a relist finds. Its `Store` is a read-only snapshot of the
server: an object deleted there leaves a tombstone so that a late write of ours cannot
bring it back, and objects are trimmed of the fields the operator never reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import aiohttp
import orjson

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]
#: Called with ("ADDED" | "MODIFIED" | "DELETED", new or last-known object, previous object).
Listener = Callable[[str, Obj, Obj | None], None]
#: Performs GET {path}?{params} (list, or watch with watch=true) and returns the raw response;
#: the third argument is the read timeout of a watch, in seconds.
Requester = Callable[[str, dict[str, str], float | None], Awaitable[aiohttp.ClientResponse]]
#: Trims an object to what the operator reads, in place.
Trimmer = Callable[[Obj], None]
#: Told of every change of a store's contents: (old or None, new or None).
Subscriber = Callable[[Obj | None, Obj | None], None]

#: How long a deleted object's UID is remembered (longer than any request can be late).
TOMBSTONE_SECONDS = 600.0


def obj_key(obj: Obj) -> Key:
    """(namespace, name); namespace is "" for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name")))


def obj_uid(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


def same_version(a: Obj, b: Obj) -> bool:
    """Whether two copies are the same version of an object: a watch event that carries the
    version our own write already stored is its echo."""
    rv = (a.get("metadata") or {}).get("resourceVersion")
    return bool(rv) and rv == (b.get("metadata") or {}).get("resourceVersion")


def _rv(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def trim_metadata(obj: Obj) -> None:
    """Drop what no reader of ours needs: managedFields and the last-applied annotation."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if annotations:
            annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)


class Store:
    """Objects of one kind by (namespace, name), with secondary indexes and tombstones."""

    def __init__(self, indexers: dict[str, Callable[[Obj], list[Hashable]]] | None = None) -> None:
        self.objects: dict[Key, Obj] = {}
        self._indexers = indexers or {}
        self._indexes: dict[str, dict[Hashable, set[Key]]] = {n: {} for n in self._indexers}
        #: UIDs of deleted objects, with when they were deleted (monotonic seconds).
        self._tombstones: dict[str, float] = {}
        self._subscribers: list[Subscriber] = []

    def add_index(self, name: str, indexer: Callable[[Obj], list[Hashable]]) -> None:
        """Index the objects (those here and all to come) by what `indexer` yields."""
        if name in self._indexers:
            return
        self._indexers[name] = indexer
        index: dict[Hashable, set[Key]] = {}
        for key, obj in self.objects.items():
            for value in indexer(obj):
                index.setdefault(value, set()).add(key)
        self._indexes[name] = index

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber(old, new)` on every change of the contents, whoever makes it
        (a watch event, a relist, or the answer to a write of ours)."""
        self._subscribers.append(subscriber)

    def get(self, key: Key) -> Obj | None:
        return self.objects.get(key)

    def by(self, index: str, value: Hashable) -> list[Obj]:
        """Objects whose `index` indexer yields `value`."""
        keys = self._indexes[index].get(value, ())
        return [self.objects[k] for k in keys if k in self.objects]

    def keys_by(self, index: str, value: Hashable) -> set[Key]:
        """Keys of the objects whose `index` indexer yields `value`."""
        return set(self._indexes[index].get(value, ()))

    def deleted(self, uid: str) -> bool:
        """Whether the object with this UID was deleted on the server."""
        return uid in self._tombstones

    def put(self, obj: Obj) -> Obj | None:
        """Store what the server sent, unless a newer version is here or it was deleted;
        return the version it replaced (or, when refused, the one kept)."""
        key = obj_key(obj)
        old = self.objects.get(key)
        if old is not None and _rv(old) > _rv(obj) > 0:
            return old
        if self.deleted(obj_uid(obj)):
            return old
        self._set(key, old, obj)
        return old

    def apply_write(self, obj: Obj) -> bool:
        """Store the answer to a write of ours: only over an older version of the same object,
        never as a new entry, so a write that raced a deletion cannot resurrect anything."""
        key = obj_key(obj)
        old = self.objects.get(key)
        if old is None or obj_uid(old) != obj_uid(obj) or _rv(old) >= _rv(obj):
            return False
        self._set(key, old, obj)
        return True

    def remove(self, key: Key, uid: str | None = None) -> Obj | None:
        """Forget the object at `key` (of `uid`, when given) and remember it was deleted."""
        old = self.objects.get(key)
        if uid:
            self._tombstones[uid] = time.monotonic()
        if old is None or (uid and obj_uid(old) != uid):
            return None
        del self.objects[key]
        self._tombstones[obj_uid(old)] = time.monotonic()
        self._unindex(key, old)
        for subscriber in self._subscribers:
            subscriber(old, None)
        return old

    def replace(
        self, objs: list[Obj], namespace: str | None = None
    ) -> tuple[list[tuple[Obj, Obj | None]], list[Obj]]:
        """Make the store what a full list shows (of one `namespace`, when given: a list of
        one namespace says nothing of the others); return (added or changed, with what they
        replaced) and the objects the list no longer has (deleted meanwhile)."""
        seen: set[Key] = set()
        changed: list[tuple[Obj, Obj | None]] = []
        for obj in objs:
            key = obj_key(obj)
            seen.add(key)
            old = self.objects.get(key)
            if old is not None and obj_uid(old) != obj_uid(obj):
                self.remove(key)  # Deleted and created again while we were not watching.
                old = None
            if old is None or _rv(old) != _rv(obj):
                self.put(obj)
                if self.objects.get(key) is obj:
                    changed.append((obj, old))
        gone = [
            self.remove(k)
            for k in list(self.objects)
            if k not in seen and (namespace is None or k[0] == namespace)
        ]
        self._prune_tombstones()
        return changed, [g for g in gone if g is not None]

    def _set(self, key: Key, old: Obj | None, obj: Obj) -> None:
        self._unindex(key, old)
        self.objects[key] = obj
        for name, fn in self._indexers.items():
            for value in fn(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        for subscriber in self._subscribers:
            subscriber(old, obj)

    def _unindex(self, key: Key, old: Obj | None) -> None:
        if old is None:
            return
        for name, fn in self._indexers.items():
            for value in fn(old):
                keys = self._indexes[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indexes[name][value]

    def _prune_tombstones(self) -> None:
        horizon = time.monotonic() - TOMBSTONE_SECONDS
        for uid in [u for u, t in self._tombstones.items() if t < horizon]:
            del self._tombstones[uid]

    def __len__(self) -> int:
        return len(self.objects)


class WatchSilent(Exception):
    """A watch sent nothing, not even a bookmark, for longer than its read timeout."""


class Informer:
    """List, then watch; resume or relist on every failure, forever, until cancelled."""

    def __init__(
        self,
        resource: str,
        path: str,
        request: Requester,
        store: Store,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        listeners: list[Listener] | None = None,
        trim: Trimmer = trim_metadata,
        watch_timeout: int = 216,
        read_timeout: float = 270.0,
        on_restart: Callable[[str, str], None] | None = None,
    ) -> None:
        self.resource = resource
        self.path = path
        self.request = request
        self.store = store
        #: The one namespace `path` lists, if it lists only one (its store may hold others).
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.listeners = listeners or []
        self.trim = trim
        #: Asked of the server: it ends the watch after this long (we then resume it).
        self.watch_timeout = watch_timeout
        #: Longer than watch_timeout: a healthy server has ended the watch before this.
        self.read_timeout = read_timeout
        self.on_restart = on_restart
        self.synced = asyncio.Event()
        #: Monotonic time of the last byte received from the server.
        self.last_heard = time.monotonic()
        #: Where the watch resumes; "" to list first.
        self.resource_version = ""

    def _params(self, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def run(self) -> None:
        """Keep the store in step with the cluster until cancelled."""
        backoff = 0.5
        while True:
            try:
                if not self.resource_version:
                    self.resource_version = await self._list()
                await self._watch()
                backoff = 0.5
                continue  # The server ended the watch (its timeout): resume where it was.
            except asyncio.CancelledError:
                raise
            except WatchSilent as exc:
                why = "silent"
                logger.warning("watch of %s: %s; watching again", self.resource, exc)
            except _Expired:
                why, self.resource_version = "expired", ""
                logger.info("watch of %s expired; listing again", self.resource)
                backoff = 0.5
            except Exception as exc:
                why, self.resource_version = "error", ""
                logger.warning("watch of %s failed (%r); listing again", self.resource, exc)
            if self.on_restart is not None:
                self.on_restart(self.resource, why)
            if why != "expired":
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 30.0)

    async def _list(self) -> str:
        items: list[Obj] = []
        cont = ""
        rv = ""
        while True:
            params = self._params(limit="500")
            if cont:
                params["continue"] = cont
            async with await self.request(self.path, params, None) as resp:
                body = orjson.loads(await resp.read())
            if resp.status != 200:
                if resp.status == 410:
                    cont = ""  # The continue token expired: start the list over.
                    items.clear()
                    continue
                raise RuntimeError(
                    f"list {self.resource}: HTTP {resp.status}: {body.get('message')}"
                )
            self.last_heard = time.monotonic()
            kind = str(body.get("kind", "")).removesuffix("List")
            api_version = body.get("apiVersion")
            for item in body.get("items") or []:
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                self.trim(item)
                items.append(item)
            rv = str(body["metadata"].get("resourceVersion", ""))
            cont = str(body["metadata"].get("continue") or "")
            if not cont:
                break
        changed, gone = self.store.replace(items, self.namespace)
        for obj, prev in changed:
            self._notify("ADDED" if prev is None else "MODIFIED", obj, prev)
        for gone_obj in gone:
            self._notify("DELETED", gone_obj, gone_obj)
        self.synced.set()
        return rv

    async def _watch(self) -> None:
        """Watch from `resource_version`, advancing it with every event and bookmark."""
        params = self._params(
            watch="true",
            resourceVersion=self.resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self.watch_timeout),
        )
        async with await self.request(self.path, params, self.read_timeout) as resp:
            if resp.status == 410:
                raise _Expired()
            if resp.status != 200:
                raise RuntimeError(f"watch {self.resource}: HTTP {resp.status}")
            while True:
                try:
                    line = await resp.content.readline()
                except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                    raise WatchSilent(
                        f"nothing received for {self.read_timeout:.0f}s (half-open connection?)"
                    ) from exc
                self.last_heard = time.monotonic()
                if not line:
                    return
                if not line.strip():
                    continue
                event = orjson.loads(line)
                etype = event.get("type")
                obj: Obj = event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    raise RuntimeError(f"watch {self.resource}: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.resource_version = str(rv)
                if etype == "BOOKMARK":
                    continue
                self.trim(obj)
                if etype == "DELETED":
                    prev = self.store.remove(obj_key(obj), obj_uid(obj))
                    self._notify("DELETED", obj, prev)
                else:
                    prev = self.store.put(obj)
                    if self.store.get(obj_key(obj)) is obj:
                        self._notify(str(etype), obj, prev)

    def _notify(self, etype: str, obj: Obj, prev: Obj | None) -> None:
        for listener in self.listeners:
            try:
                listener(etype, obj, prev)
            except Exception:
                logger.exception("listener of %s failed", self.resource)


class _Expired(Exception):
    """The resourceVersion to resume from is too old: list again."""
