"""What one event costs the operator at 1,000 and at 10,000 tasks (no cluster needed).

    python bench/admission.py [--sizes 1000 10000] [--events 2000]

Fills the operator's caches with N SimulationTasks on one MachineGroup with a quota of 20
(20 running, the rest queued), then times what the operator does for one event of a task:
the cache update and the work it wakes (the quota book follows the change), and one pass's
observe + decide for a queued task and for a running one. It also times the queue-position
refresh of the whole group. The cost of one event must not grow with N; the refresh may
(it sweeps the queue), but it runs at most every 2 s per group.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simtask import names
from simtask.decide import Observed, decide
from simtask.informers import Store
from simtask.machinegroups import GroupBook
from simtask.timestamps import ts

GROUP = "cpu-spot"
QUOTA = 20
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def task(i: int, *, running: bool) -> dict[str, Any]:
    name = f"sweep-{i:05d}"
    status: dict[str, Any] = {
        "phase": "ComputationStarted" if running else "Submitted",
        "attempt": 1,
        "resubmissions": 0,
        "retry": 0,
        "history": [
            {"phase": "Submitted", "time": ts(T0 + timedelta(seconds=i)), "reason": "Submitted",
             "message": "waiting for a node", "attempt": 1},
        ],
        "attempts": [],
    }  # fmt: skip
    if running:
        status.update(jobName=f"{name}-a1", machineGroup=GROUP, nodeName="cpu-spot-1")
    else:
        status["queuePosition"] = max(i - QUOTA + 1, 1)
    return {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationTask",
        "metadata": {"name": name, "namespace": "sweep", "uid": f"uid-{i}",
                     "resourceVersion": str(1000 + i), "generation": 1,
                     "creationTimestamp": ts(T0)},
        "spec": {"image": "openfoam:11", "machineGroup": GROUP, "resources": {"cpu": "1"}},
        "status": status,
    }  # fmt: skip


def job(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"sweep-{i:05d}-a1", "namespace": "sweep", "uid": f"job-{i}",
            "resourceVersion": str(50000 + i),
            "labels": {names.LABEL_TASK_UID: f"uid-{i}", names.LABEL_MACHINE_GROUP: GROUP,
                       names.LABEL_ATTEMPT: "1"},
        },
        "spec": {},
        "status": {"active": 1},
    }  # fmt: skip


def measure(n: int, events: int) -> dict[str, float]:
    tasks, groups, nodes, jobs = Store(), Store(), Store(), Store()
    groups.put(
        {
            "apiVersion": "simtask.dev/v1alpha1",
            "kind": "MachineGroup",
            "metadata": {"name": GROUP, "uid": "g", "resourceVersion": "1", "generation": 1},
            "spec": {"nodeSelector": {"pool": GROUP}, "maxConcurrentTasks": QUOTA},
            "status": {"phase": "Active"},
        }
    )
    for i in range(n):
        tasks.put(task(i, running=i < QUOTA))
        if i < QUOTA:
            jobs.put(job(i))
    book = GroupBook(tasks, groups, nodes, jobs)
    now = T0 + timedelta(hours=1)

    def per_call(fn: Any, count: int) -> float:
        t0 = time.perf_counter()
        for k in range(count):
            fn(k)
        return (time.perf_counter() - t0) / count * 1e6

    queued = [tasks.get(("sweep", f"sweep-{i:05d}")) for i in range(QUOTA, n)]

    def event(k: int) -> None:
        # A watch event of a queued task (its status rewritten): the cache and the book follow.
        obj = copy.copy(queued[k % len(queued)])
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(10**7 + k))
        tasks.put(obj)

    def queued_pass(k: int) -> None:
        t = queued[(k * 7919) % len(queued)]
        assert t is not None
        decide(Observed(task=t, missing_inputs=[], group=book.view(t, now)), now)

    running = [tasks.get(("sweep", f"sweep-{i:05d}")) for i in range(QUOTA)]

    def running_pass(k: int) -> None:
        t = running[k % QUOTA]
        assert t is not None
        j = jobs.get(("sweep", f"sweep-{k % QUOTA:05d}-a1"))
        decide(Observed(task=t, jobs={1: j} if j else {}, group=book.view(t, now)), now)

    return {
        "tasks": n,
        "event (cache + quota book), µs": per_call(event, events),
        "pass of a queued task (view + decide), µs": per_call(queued_pass, events),
        "pass of a running task, µs": per_call(running_pass, events),
        "slots freed → next in line, µs": per_call(lambda k: book.next_in_line(GROUP), events),
        "queue-position sweep of the group, ms": per_call(lambda k: book.stale_positions(GROUP), 20)
        / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    rows = [measure(n, args.events) for n in args.sizes]
    keys = [k for k in rows[0] if k != "tasks"]
    print("| per event | " + " | ".join(f"{r['tasks']:,} tasks" for r in rows) + " | ratio |")
    print("|---|" + "---|" * (len(rows) + 1))
    for key in keys:
        values = [r[key] for r in rows]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        print(f"| {key} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
