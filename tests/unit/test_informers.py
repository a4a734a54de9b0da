"""Caches and informers: a read-only snapshot of the server that never goes silently stale."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from simtask.informers import Informer, Store, obj_key

Obj = dict[str, Any]


def obj(name: str, rv: int, uid: str = "", ns: str = "ns", **extra: Any) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": ns,
        "uid": uid or f"uid-{name}",
        "resourceVersion": str(rv),
    }
    meta["managedFields"] = [{"manager": "kubectl"}]
    return {"metadata": meta, **extra}


# ---------------------------------------------------------------- Store


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = Store()
    store.put(obj("a", 10))
    store.put(obj("a", 7))
    assert store.get(("ns", "a"))["metadata"]["resourceVersion"] == "10"  # type: ignore[index]


def test_a_write_of_ours_never_brings_a_deleted_object_back() -> None:
    store = Store()
    store.put(obj("a", 10))
    store.remove(("ns", "a"), "uid-a")
    # The answer to a status patch sent before the deletion arrives after it.
    assert not store.apply_write(obj("a", 11))
    assert store.get(("ns", "a")) is None
    # Nor does a late copy of the same object (same UID) through put.
    store.put(obj("a", 12))
    assert store.get(("ns", "a")) is None
    assert store.deleted("uid-a")


def test_a_write_of_ours_updates_only_the_same_object() -> None:
    store = Store()
    store.put(obj("a", 10, uid="old"))
    assert not store.apply_write(obj("a", 11, uid="new")), "another object of the same name"
    assert not store.apply_write(obj("a", 9, uid="old")), "older than the cache"
    assert store.apply_write(obj("a", 11, uid="old"))
    assert store.get(("ns", "a"))["metadata"]["resourceVersion"] == "11"  # type: ignore[index]


def test_a_new_object_of_a_deleted_name_is_welcome() -> None:
    store = Store()
    store.put(obj("a", 10, uid="first"))
    store.remove(("ns", "a"), "first")
    store.put(obj("a", 20, uid="second"))
    assert store.get(("ns", "a"))["metadata"]["uid"] == "second"  # type: ignore[index]


def test_indexes_follow_changes_and_deletions() -> None:
    store = Store({"node": lambda o: [o["spec"]["node"]]})
    store.put(obj("a", 1, spec={"node": "n1"}))
    store.put(obj("b", 1, spec={"node": "n1"}))
    store.put(obj("a", 2, spec={"node": "n2"}))
    assert [o["metadata"]["name"] for o in store.by("node", "n1")] == ["b"]
    store.remove(("ns", "b"))
    assert store.by("node", "n1") == []
    assert store.keys_by("node", "n2") == {("ns", "a")}


def test_replace_reports_changes_and_the_deletions_a_relist_finds() -> None:
    store = Store()
    store.put(obj("kept", 1))
    store.put(obj("changed", 1))
    store.put(obj("gone", 1))
    store.put(obj("recreated", 1, uid="old"))
    changed, gone = store.replace(
        [obj("kept", 1), obj("changed", 2), obj("new", 3), obj("recreated", 4, uid="new")]
    )
    assert sorted(o["metadata"]["name"] for o, _ in changed) == ["changed", "new", "recreated"]
    assert [o["metadata"]["name"] for o in gone] == ["gone"]
    assert store.deleted("old") and store.deleted("uid-gone")


def test_a_relist_of_one_namespace_leaves_the_others_alone() -> None:
    """A namespace-scoped operator has one informer per namespace over one store: the list
    of one namespace says nothing about the objects of another."""
    store = Store()
    store.put(obj("a", 1, ns="team-a"))
    store.put(obj("gone", 1, ns="team-a"))
    store.put(obj("b", 1, ns="team-b"))
    changed, gone = store.replace([obj("a", 1, ns="team-a")], namespace="team-a")
    assert changed == []
    assert [obj_key(o) for o in gone] == [("team-a", "gone")]
    assert store.get(("team-b", "b")) is not None


# ---------------------------------------------------------------- Informer


class FakeContent:
    def __init__(self, lines: list[bytes], then: str) -> None:
        self.lines = list(lines)
        self.then = then

    async def readline(self) -> bytes:
        if self.lines:
            return self.lines.pop(0)
        if self.then == "silent":
            raise TimeoutError  # What aiohttp raises when sock_read passes with no byte.
        if self.then == "hang":
            await asyncio.sleep(3600)
        return b""


class FakeResponse:
    def __init__(self, status: int, body: Obj | None = None, content: FakeContent | None = None):
        self.status = status
        self.body = body
        self.content = content

    async def read(self) -> bytes:
        return json.dumps(self.body or {}).encode()

    async def __aenter__(self) -> FakeResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def event(etype: str, o: Obj) -> bytes:
    return (json.dumps({"type": etype, "object": o}) + "\n").encode()


class FakeServer:
    """Answers lists and watches from scripts, and records what was asked."""

    def __init__(self, lists: list[list[Obj]], watches: list[tuple[list[bytes], str]]) -> None:
        self.lists = lists
        self.watches = watches
        self.requests: list[tuple[dict[str, str], float | None]] = []
        self.exhausted = asyncio.Event()

    async def __call__(
        self, path: str, params: dict[str, str], read_timeout: float | None
    ) -> FakeResponse:
        self.requests.append((params, read_timeout))
        if params.get("watch"):
            if not self.watches:
                self.exhausted.set()
                return FakeResponse(200, content=FakeContent([], "hang"))
            lines, then = self.watches.pop(0)
            return FakeResponse(200, content=FakeContent(lines, then))
        items = self.lists.pop(0)
        rv = max([int(i["metadata"]["resourceVersion"]) for i in items] + [1])
        return FakeResponse(
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )


def run_informer(server: FakeServer, store: Store) -> tuple[list[tuple[str, str]], list[str]]:
    seen: list[tuple[str, str]] = []
    restarts: list[str] = []

    async def main() -> None:
        inf = Informer(
            "pods",
            "/api/v1/pods",
            server,
            store,
            label_selector="simtask.dev/task-uid",
            listeners=[lambda t, o, p: seen.append((t, o["metadata"]["name"]))],
            read_timeout=7.0,
            on_restart=lambda r, why: restarts.append(why),
        )
        task = asyncio.create_task(inf.run())
        await asyncio.wait_for(server.exhausted.wait(), timeout=10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    return seen, restarts


def test_informer_lists_watches_and_trims() -> None:
    server = FakeServer(
        lists=[[obj("a", 5)]],
        watches=[
            (
                [
                    event("ADDED", obj("b", 6)),
                    event("MODIFIED", obj("a", 7)),
                    event("BOOKMARK", {"metadata": {"resourceVersion": "9"}}),
                    event("DELETED", obj("b", 10)),
                ],
                "end",
            )
        ],
    )
    store = Store()
    seen, restarts = run_informer(server, store)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert list(store.objects) == [("ns", "a")]
    assert "managedFields" not in store.get(("ns", "a"))["metadata"]  # type: ignore[index]
    params = [p for p, _ in server.requests]
    assert params[0]["labelSelector"] == "simtask.dev/task-uid"
    assert params[1]["resourceVersion"] == "5" and params[1]["allowWatchBookmarks"] == "true"
    # The server ended the watch: it resumes from the last resourceVersion seen, no relist.
    assert params[2]["watch"] == "true" and params[2]["resourceVersion"] == "10"
    assert all(t == 7.0 for p, t in server.requests if p.get("watch"))
    assert restarts == []


def test_a_silent_watch_is_restarted_from_where_it_was() -> None:
    server = FakeServer(
        lists=[[obj("a", 5)]],
        watches=[
            ([event("MODIFIED", obj("a", 6))], "silent"),
            ([event("MODIFIED", obj("a", 8))], "end"),
        ],
    )
    seen, restarts = run_informer(server, Store())
    assert restarts == ["silent"]
    watches = [p for p, _ in server.requests if p.get("watch")]
    assert [w["resourceVersion"] for w in watches[:2]] == ["5", "6"]
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("MODIFIED", "a")]


def test_an_expired_watch_relists_and_emits_the_deletions_it_missed() -> None:
    gone = {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "message": "too old resource version"},
    }
    server = FakeServer(
        lists=[[obj("a", 5), obj("b", 5)], [obj("a", 20), obj("c", 21)]],
        watches=[([(json.dumps(gone) + "\n").encode()], "end")],
    )
    store = Store()
    seen, restarts = run_informer(server, store)
    assert restarts == ["expired"]
    assert seen[2:] == [("MODIFIED", "a"), ("ADDED", "c"), ("DELETED", "b")]
    assert sorted(k for k in store.objects) == [("ns", "a"), ("ns", "c")]
    assert obj_key(store.objects[("ns", "c")]) == ("ns", "c")
