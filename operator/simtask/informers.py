"""In-memory caches fed by list+watch, with server-side label selectors.

kopf's watches cannot carry a label selector, so the Jobs and pods the operator owns, and
the nodes, are watched here: the API server only ever sends objects that match.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]
#: Called with ("ADDED" | "MODIFIED" | "DELETED", new or last-known object, previous object).
Listener = Callable[[str, Obj, Obj | None], None]
#: Performs GET {path}?{params} (list, or watch with watch=true) and returns the raw response.
Requester = Callable[[str, dict[str, str]], Awaitable[aiohttp.ClientResponse]]


def obj_key(obj: Obj) -> Key:
    """(namespace, name); namespace is "" for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name")))


def _rv(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Store:
    """Objects of one kind by (namespace, name), with secondary indexes."""

    def __init__(self, indexers: dict[str, Callable[[Obj], list[Hashable]]] | None = None) -> None:
        self.objects: dict[Key, Obj] = {}
        self._indexers = indexers or {}
        self._indexes: dict[str, dict[Hashable, set[Key]]] = {n: {} for n in self._indexers}

    def get(self, key: Key) -> Obj | None:
        return self.objects.get(key)

    def by(self, index: str, value: Hashable) -> list[Obj]:
        """Objects whose `index` indexer yields `value`."""
        keys = self._indexes[index].get(value, set())
        return [self.objects[k] for k in keys if k in self.objects]

    def put(self, obj: Obj) -> Obj | None:
        """Store `obj` unless an equal or newer version is there; return what it replaced."""
        key = obj_key(obj)
        old = self.objects.get(key)
        if old is not None and _rv(old) > _rv(obj) > 0:
            return old
        self._unindex(key, old)
        self.objects[key] = obj
        for name, fn in self._indexers.items():
            for value in fn(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        return old

    def remove(self, key: Key) -> Obj | None:
        old = self.objects.pop(key, None)
        self._unindex(key, old)
        return old

    def replace(self, objs: list[Obj]) -> None:
        self.objects.clear()
        for idx in self._indexes.values():
            idx.clear()
        for obj in objs:
            self.put(obj)

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

    def __len__(self) -> int:
        return len(self.objects)


class Informer:
    """List, then watch from the list's resourceVersion; relist when the watch expires."""

    def __init__(
        self,
        resource: str,
        path: str,
        request: Requester,
        store: Store,
        *,
        label_selector: str | None = None,
        listeners: list[Listener] | None = None,
        watch_timeout: int = 290,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.resource = resource
        self.path = path
        self.request = request
        self.store = store
        self.label_selector = label_selector
        self.listeners = listeners or []
        self.watch_timeout = watch_timeout
        self.on_restart = on_restart
        self.synced = asyncio.Event()

    def _params(self, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        return params

    async def run(self) -> None:
        """Keep the store in step with the cluster until cancelled."""
        backoff = 0.5
        while True:
            try:
                rv = await self._list()
                backoff = 0.5
                while rv:
                    rv = await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("watch of %s failed (%s); listing again", self.resource, exc)
                await asyncio.sleep(backoff + random.random() * backoff)
                backoff = min(backoff * 2, 30.0)
            if self.on_restart is not None:
                self.on_restart(self.resource)

    async def _list(self) -> str:
        items: list[Obj] = []
        cont = ""
        rv = ""
        while True:
            params = self._params(limit="500")
            if cont:
                params["continue"] = cont
            async with await self.request(self.path, params) as resp:
                body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(
                    f"list {self.resource}: HTTP {resp.status}: {body.get('message')}"
                )
            kind = str(body.get("kind", "")).removesuffix("List")
            api_version = body.get("apiVersion")
            for item in body.get("items") or []:
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                items.append(item)
            rv = str(body["metadata"].get("resourceVersion", ""))
            cont = str(body["metadata"].get("continue") or "")
            if not cont:
                break
        before = dict(self.store.objects)
        self.store.replace(items)
        for obj in items:
            prev = before.pop(obj_key(obj), None)
            if prev is None or _rv(prev) != _rv(obj):
                self._notify("ADDED" if prev is None else "MODIFIED", obj, prev)
        for gone in before.values():
            self._notify("DELETED", gone, gone)
        self.synced.set()
        return rv

    async def _watch(self, rv: str) -> str:
        """Watch from `rv`; return the last resourceVersion seen, or "" to relist."""
        params = self._params(
            watch="true",
            resourceVersion=rv,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self.watch_timeout),
        )
        async with await self.request(self.path, params) as resp:
            if resp.status != 200:
                raise RuntimeError(f"watch {self.resource}: HTTP {resp.status}")
            while True:
                line = await resp.content.readline()
                if not line:
                    return rv  # The server closed the watch; go on from where we were.
                if not line.strip():
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        return ""  # Expired: list again.
                    raise RuntimeError(f"watch {self.resource}: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if etype == "BOOKMARK":
                    continue
                if etype == "DELETED":
                    prev = self.store.remove(obj_key(obj))
                    self._notify("DELETED", obj, prev)
                else:
                    prev = self.store.put(obj)
                    self._notify(str(etype), obj, prev)

    def _notify(self, etype: str, obj: Obj, prev: Obj | None) -> None:
        for listener in self.listeners:
            try:
                listener(etype, obj, prev)
            except Exception:
                logger.exception("listener of %s failed", self.resource)
