"""Quota admission: FIFO order, slots held by Jobs and by admissions in flight, positions,
and that the book follows every change of the caches incrementally."""

from __future__ import annotations

from typing import Any

from simtask import names
from simtask.informers import Store
from simtask.machinegroups import GroupBook
from tests.unit import fixtures as f

Obj = dict[str, Any]
GROUP = "cpu-spot"


def queued_task(i: int, *, submitted: float, **spec: Any) -> Obj:
    task = f.task(f"t{i:03d}", machineGroup=GROUP, **spec)
    task["metadata"]["uid"] = f"uid-{i}"
    task["metadata"]["resourceVersion"] = str(100 + i)
    task["status"] = {
        "phase": "Submitted",
        "attempt": 1,
        "history": [{"phase": "Submitted", "attempt": 1, "time": f.ts(submitted)}],
    }
    return task


def running(task: Obj, job_name: str, rv: int) -> Obj:
    return {
        **task,
        "metadata": {**task["metadata"], "resourceVersion": str(rv)},
        "status": {
            **task["status"],
            "phase": "ComputationStarted",
            "jobName": job_name,
            "machineGroup": GROUP,
        },
    }


def job_of(task: Obj, *, finished: bool = False, rv: int = 1) -> Obj:
    job = f.job(conditions=f.job_complete(5) if finished else ())
    job["metadata"]["name"] = f"{task['metadata']['name']}-a1"
    job["metadata"]["resourceVersion"] = str(rv)
    job["metadata"]["labels"][names.LABEL_TASK_UID] = task["metadata"]["uid"]
    job["metadata"]["labels"][names.LABEL_MACHINE_GROUP] = GROUP
    return job


def book_with(quota: int | None, tasks: list[Obj]) -> tuple[GroupBook, Store, Store]:
    group = f.machine_group(GROUP)
    if quota is not None:
        group["spec"]["maxConcurrentTasks"] = quota
    groups, jobs, task_store = Store(), Store(), Store()
    groups.put(group)
    for task in tasks:
        task_store.put(task)
    return GroupBook(task_store, groups, Store(), jobs), task_store, jobs


def test_first_come_first_served_up_to_the_quota() -> None:
    tasks = [queued_task(i, submitted=10 - i) for i in range(5)]  # t004 came first
    book, _, _ = book_with(2, tasks)
    views = {t["metadata"]["name"]: book.view(t, f.at(20)) for t in reversed(tasks)}
    admitted = sorted(n for n, v in views.items() if v is not None and v.admits)
    assert admitted == ["t003", "t004"]
    positions = {n: v.queue_position for n, v in views.items() if v is not None and not v.admits}
    assert positions == {"t002": 1, "t001": 2, "t000": 3}


def test_admitted_tasks_hold_their_slot_until_their_job_finishes() -> None:
    tasks = [queued_task(i, submitted=i) for i in range(3)]
    book, task_store, jobs = book_with(1, tasks)
    first = book.view(tasks[0], f.at(20))
    assert first is not None and first.admits
    # Admitted in memory, status not yet written: the slot is taken.
    second = book.view(tasks[1], f.at(20))
    assert second is not None and not second.admits and second.queue_position == 1
    # Its status shows the Job (not yet in the cache): still held.
    task_store.put(running(tasks[0], "t000-a1", 200))
    second = book.view(tasks[1], f.at(20))
    assert second is not None and not second.admits
    # The Job is there, then finished: the slot is free for the next in line only.
    jobs.put(job_of(tasks[0]))
    assert book.next_in_line(GROUP) == []
    jobs.put(job_of(tasks[0], finished=True, rv=2))
    assert book.next_in_line(GROUP) == [(f.NAMESPACE, "t001")]
    second = book.view(tasks[1], f.at(21))
    assert second is not None and second.admits


def test_held_killed_and_other_groups_tasks_are_not_queued() -> None:
    tasks = [
        queued_task(0, submitted=0, hold=True),
        queued_task(1, submitted=1, kill=True),
        queued_task(2, submitted=2),
    ]
    other = f.task("elsewhere", machineGroup="gpu-a100")
    other["status"] = {"phase": "Submitted", "attempt": 1}
    book, _, _ = book_with(1, [*tasks, other])
    assert book.queued(GROUP) == 1
    assert book.next_in_line(GROUP) == [(f.NAMESPACE, "t002")]
    assert book.tasks_of(GROUP) == {(f.NAMESPACE, f"t{i:03d}") for i in range(3)}


def test_the_queue_follows_changes_and_deletions() -> None:
    tasks = [queued_task(i, submitted=i) for i in range(3)]
    book, task_store, _ = book_with(1, tasks)
    assert book.queued(GROUP) == 3
    task_store.put(running(tasks[0], "t000-a1", 300))  # started: no longer queued
    task_store.remove((f.NAMESPACE, "t001"))
    assert book.queued(GROUP) == 1 and book.running(GROUP) == 1
    # A task created after the book was made is queued too.
    task_store.put(queued_task(9, submitted=0.5))
    assert [k[1] for k in book.next_in_line(GROUP)] == []
    assert book.queued(GROUP) == 2


def test_stale_positions_are_only_those_that_moved() -> None:
    tasks = [queued_task(i, submitted=i) for i in range(4)]
    book, task_store, jobs = book_with(1, tasks)
    for task in tasks:  # What each task shows after a pass.
        view = book.view(task, f.at(10))
        assert view is not None
        if not view.admits:
            task["status"]["queuePosition"] = view.queue_position
            task["metadata"]["resourceVersion"] = str(int(task["metadata"]["resourceVersion"]) + 1)
            task_store.put(task)
    assert book.stale_positions(GROUP) == []
    # t000 runs and ends: everyone moves up one, and t001 may start.
    task_store.put(running(tasks[0], "t000-a1", 500))
    jobs.put(job_of(tasks[0], finished=True, rv=3))
    assert [k[1] for k in book.stale_positions(GROUP)] == ["t001", "t002", "t003"]


def test_a_group_without_quota_admits_all() -> None:
    tasks = [queued_task(i, submitted=i) for i in range(3)]
    book, _, _ = book_with(None, tasks)
    assert all((v := book.view(t, f.at(5))) is not None and v.admits for t in tasks)
    assert book.stale_positions(GROUP) == []


def test_first_seen_first_served_within_one_second() -> None:
    # Names in the reverse of arrival order, both submitted in the same second.
    book, task_store, _ = book_with(1, [queued_task(9, submitted=5)])
    task_store.put(queued_task(1, submitted=5))
    assert [k[1] for k in book.next_in_line(GROUP)] == ["t009"]
    # A status rewrite (a new queue position) keeps a task's place.
    again = queued_task(9, submitted=5)
    again["status"]["queuePosition"] = 1
    again["metadata"]["resourceVersion"] = "900"
    task_store.put(again)
    late = book.view(queued_task(1, submitted=5), f.at(6))
    assert late is not None and not late.admits and late.queue_position == 1
