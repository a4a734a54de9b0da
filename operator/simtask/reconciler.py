"""Act: observe a task from the caches, decide, create/delete Jobs, write the status once."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from simtask import GROUP, VERSION, metrics, names
from simtask.api import SimulationTaskSpec, TaskInput, parse_task_spec
from simtask.builders import job_attempt
from simtask.conditions import find_condition
from simtask.decide import (
    CreateJob,
    Decision,
    DeleteJob,
    DeleteTask,
    GroupView,
    Observed,
    SuspendJob,
    decide,
    job_finished,
)
from simtask.groupcontroller import GroupController
from simtask.informers import Informer, Key, Obj, Store, obj_key
from simtask.kube import ApiError, Kube
from simtask.lifecycle import ALWAYS_TERMINAL, PREEMPTED, RUNNING, Phase, parse_phase
from simtask.machinegroups import GroupBook
from simtask.timestamps import parse_ts, ts
from simtask.workqueue import WorkQueue

logger = logging.getLogger(__name__)

TASKS_PATH = f"/apis/{GROUP}/{VERSION}"

#: Transitions whose Event is a Warning: ways a task or attempt ends that the user did not ask for.
_WARNING_PHASES = (ALWAYS_TERMINAL | PREEMPTED) - {Phase.SUCCESS, Phase.KILLED}

#: The object an input names: its kind, and its resource in the core API.
_INPUT_OBJECTS: dict[str, tuple[str, str]] = {
    "configMap": ("ConfigMap", "configmaps"),
    "secret": ("Secret", "secrets"),
    "persistentVolumeClaim": ("PersistentVolumeClaim", "persistentvolumeclaims"),
}


def task_path(namespace: str, name: str, sub: str = "") -> str:
    return f"{TASKS_PATH}/namespaces/{namespace}/simulationtasks/{name}{sub}"


def _task_uid(obj: Obj) -> list[Hashable]:
    uid = ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_TASK_UID)
    return [uid] if uid else []


def _node_name(obj: Obj) -> list[Hashable]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def _node_changed(old: Obj | None, new: Obj) -> bool:
    """Whether a node event can change what its tasks show (taints, readiness, deletion)."""
    if old is None:
        return False

    def view(node: Obj) -> Any:
        spec = node.get("spec") or {}
        return (
            spec.get("taints"),
            spec.get("unschedulable"),
            (find_condition(node, "Ready") or {}).get("status"),
            (node.get("metadata") or {}).get("deletionTimestamp"),
        )

    return bool(view(old) != view(new))


class Controller:
    """Holds the caches and the work queue, and runs the reconcile workers."""

    def __init__(self, kube: Kube, *, workers: int = 8) -> None:
        self.kube = kube
        self.queue = WorkQueue()
        self.group_queue = WorkQueue()
        #: Jobs the API server refused, by task: (task uid, message).
        self.rejected: dict[Key, tuple[str, str]] = {}
        self.tasks = Store({"uid": lambda o: [(o.get("metadata") or {}).get("uid")]})
        self.groups = Store()
        self.jobs = Store({"task": _task_uid})
        self.pods = Store({"task": _task_uid, "node": _node_name})
        self.nodes = Store()
        self.book = GroupBook(self.tasks, self.groups, self.nodes, self.jobs)
        self.group_controller = GroupController(kube, self.book, self.group_queue, self.queue.add)
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        selector = names.LABEL_TASK_UID
        restart = lambda r: metrics.WATCH_RESTARTS.labels(r).inc()  # noqa: E731
        self.informers = [
            Informer(
                "jobs",
                "/apis/batch/v1/jobs",
                kube.watch_request,
                self.jobs,
                label_selector=selector,
                listeners=[self._on_owned],
                on_restart=restart,
            ),
            Informer(
                "pods",
                "/api/v1/pods",
                kube.watch_request,
                self.pods,
                label_selector=selector,
                listeners=[self._on_owned],
                on_restart=restart,
            ),
            Informer(
                "nodes",
                "/api/v1/nodes",
                kube.watch_request,
                self.nodes,
                listeners=[self._on_node],
                on_restart=restart,
            ),
        ]
        self.ready = asyncio.Event()

    # -- lifecycle

    async def start(self) -> None:
        """Start the informers, wait for their first list, then the workers."""
        for inf in self.informers:
            self._tasks.append(asyncio.create_task(inf.run(), name=f"informer-{inf.resource}"))
        await asyncio.gather(*(inf.synced.wait() for inf in self.informers))
        for i in range(self.workers):
            worker = self._worker(self.queue, self.reconcile, "SimulationTask")
            self._tasks.append(asyncio.create_task(worker, name=f"worker-{i}"))
        groups = self._worker(self.group_queue, self.group_controller.reconcile, "MachineGroup")
        self._tasks.append(asyncio.create_task(groups, name="group-worker"))
        self._tasks.append(asyncio.create_task(self._gauges(), name="gauges"))
        self.ready.set()
        logger.info(
            "caches synced: %d jobs, %d pods, %d nodes",
            len(self.jobs),
            len(self.pods),
            len(self.nodes),
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- events into the queue

    def on_task_event(self, etype: str, body: Obj) -> None:
        """A SimulationTask event from kopf's watch."""
        key = obj_key(body)
        if etype == "DELETED":
            self.tasks.remove(key)
            self.queue.forget(key)
            self.book.forget(key)
            return
        self.tasks.put(body)
        self.queue.add(key)

    def on_group_event(self, etype: str, body: Obj) -> None:
        """A MachineGroup event from kopf's watch: its tasks may move."""
        deleted = etype == "DELETED"
        prev = self.groups.remove(obj_key(body)) if deleted else self.groups.put(body)
        name = str((body.get("metadata") or {}).get("name"))
        self.group_queue.add(name)

        def what_tasks_see(group: Obj | None) -> Any:
            meta = (group or {}).get("metadata") or {}
            phase = ((group or {}).get("status") or {}).get("phase")
            return (group is None, meta.get("generation"), meta.get("deletionTimestamp"), phase)

        # Our own status writes (task counts) change nothing for the tasks: waking every task
        # of the group on each of them would make every transition cost a pass per task.
        if deleted or what_tasks_see(prev) != what_tasks_see(body):
            for key in self.book.tasks_of(name):
                self.queue.add(key)

    def _task_key_for_uid(self, uid: Hashable) -> Key | None:
        found = self.tasks.by("uid", uid)
        return obj_key(found[0]) if found else None

    def _on_owned(self, etype: str, obj: Obj, prev: Obj | None) -> None:
        for uid in _task_uid(obj):
            key = self._task_key_for_uid(uid)
            if key is not None:
                self.queue.add(key)
        group = ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_MACHINE_GROUP)
        if group and obj.get("kind") == "Job" and (etype == "DELETED" or job_finished(obj)):
            # A finished Job frees a slot of its group: the queued tasks look again.
            for key in self.book.waiting_tasks(group):
                self.queue.add(key)

    def _on_node(self, etype: str, obj: Obj, prev: Obj | None) -> None:
        if etype == "MODIFIED" and not _node_changed(prev, obj):
            return
        for group in list(self.groups.objects):
            self.group_queue.add(group[1])  # Group capacity may have changed.
        if etype == "ADDED":
            return
        name = (obj.get("metadata") or {}).get("name")
        for pod in self.pods.by("node", name):
            self._on_owned(etype, pod, None)

    # -- workers

    async def _worker(
        self, queue: WorkQueue, handle: Callable[[Any], Awaitable[None]], what: str
    ) -> None:
        """Process keys of `queue` with `handle`; failures are counted and retried later."""
        while True:
            key = await queue.get()
            metrics.WORKQUEUE_DEPTH.set(len(self.queue))
            t0 = time.perf_counter()
            try:
                await handle(key)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.code == 409:
                    queue.add_after(key, 0.2)  # Someone wrote first: look again.
                else:
                    metrics.RECONCILE_ERRORS.labels("api").inc()
                    logger.warning("%s %s: %s", what, key, exc)
                    queue.add_after(key, 2.0)
            except Exception:
                metrics.RECONCILE_ERRORS.labels("internal").inc()
                logger.exception("%s %s failed", what, key)
                queue.add_after(key, 5.0)
            finally:
                if queue is self.queue:
                    metrics.RECONCILE_DURATION.observe(time.perf_counter() - t0)
                queue.done(key)

    async def _gauges(self) -> None:
        while True:
            counts: dict[tuple[str, str], int] = {}
            for task in list(self.tasks.objects.values()):
                status = task.get("status") or {}
                group = str(
                    status.get("machineGroup") or (task.get("spec") or {}).get("machineGroup") or ""
                )
                k = (str(status.get("phase") or "Pending"), group)
                counts[k] = counts.get(k, 0) + 1
            metrics.TASKS.clear()
            for (phase, group), n in counts.items():
                metrics.TASKS.labels(phase, group).set(n)
            metrics.WORKQUEUE_DEPTH.set(len(self.queue))
            await asyncio.sleep(5)

    # -- one pass

    async def reconcile(self, key: Key) -> None:
        task = self.tasks.get(key)
        if task is None or (task.get("metadata") or {}).get("deletionTimestamp"):
            return  # Deleted: the garbage collector removes its Jobs and pods.
        uid = task["metadata"]["uid"]
        jobs: dict[int, Obj] = {}
        for job in self.jobs.by("task", uid):
            jobs[job_attempt(job) or 0] = job
        pods: dict[int, list[Obj]] = {}
        for pod in self.pods.by("task", uid):
            pods.setdefault(job_attempt(pod) or 0, []).append(pod)
        node_names = {n for ps in pods.values() for p in ps for n in _node_name(p)}
        status = task.get("status") or {}
        if status.get("nodeName"):
            node_names.add(status["nodeName"])
        nodes = {
            str(n): node for n in node_names if (node := self.nodes.get(("", str(n)))) is not None
        }

        phase = parse_phase(status.get("phase"))
        missing, invalid = None, None
        if _may_start_an_attempt(task, phase):
            spec, invalid = parse_spec(task)
            if spec is not None and spec.inputs:
                missing = await self._missing_inputs(task["metadata"]["namespace"], spec.inputs)
        group = self.book.view(task)

        now = datetime.now(UTC)
        rejected = self.rejected.pop(key, None)
        decision = decide(
            Observed(
                task=task,
                jobs=jobs,
                pods=pods,
                nodes=nodes,
                missing_inputs=missing,
                group=group,
                job_rejected=rejected[1] if rejected and rejected[0] == uid else None,
                spec_error=invalid,
            ),
            now,
        )
        for refused in decision.refused:
            logger.warning("%s/%s: refused move %s", *key, refused)
        await self._write_status(task, decision)
        await self._act(task, decision)
        if group is not None and (decision.transitions or decision.actions):
            self.group_queue.add(group.name)
            if group.obj is not None and (group.obj.get("spec") or {}).get("maxConcurrentTasks"):
                # A slot may have freed or the queue moved: the tasks waiting look again.
                for other in self.book.waiting_tasks(group.name):
                    if other != key:
                        self.queue.add(other)
        self._observe_metrics(task, decision, group)
        if decision.requeue_after is not None:
            self.queue.add_after(key, decision.requeue_after)

    async def _missing_inputs(self, ns: str, inputs: list[TaskInput]) -> list[str]:
        missing: list[str] = []
        for item in inputs:
            field, ref = item.source()
            kind, resource = _INPUT_OBJECTS[field]
            obj = await self.kube.get(
                f"/api/v1/namespaces/{ns}/{resource}/{ref}", resource=resource
            )
            phase = ((obj or {}).get("status") or {}).get("phase", "Pending")
            if obj is None:
                missing.append(
                    f"input {item.name!r}: {kind} {ref!r} does not exist in namespace {ns!r}"
                )
            elif field == "persistentVolumeClaim" and phase != "Bound":
                missing.append(f"input {item.name!r}: {kind} {ref!r} is {phase}, not Bound")
        return missing

    async def _write_status(self, task: Obj, decision: Decision) -> None:
        old = task.get("status") or {}
        new = decision.status
        if new == old:
            return
        patch_status: dict[str, Any] = dict(new)
        for gone in set(old) - set(new):
            patch_status[gone] = None
        meta = task["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch_status}
        updated = await self.kube.merge_patch(
            task_path(meta["namespace"], meta["name"], "/status"), body, resource="simulationtasks"
        )
        self.tasks.put(updated)
        for t in decision.transitions:
            await self._event(updated, t.to_phase, t.reason, t.message)

    async def _act(self, task: Obj, decision: Decision) -> None:
        ns = task["metadata"]["namespace"]
        for action in decision.actions:
            if isinstance(action, CreateJob):
                try:
                    created = await self.kube.create(
                        f"/apis/batch/v1/namespaces/{ns}/jobs", action.job, resource="jobs"
                    )
                    self.jobs.put(created)
                except ApiError as exc:
                    if exc.code == 409:
                        continue  # Created before a restart: the name is the attempt's own.
                    if exc.code in (400, 422):
                        # Invalid as built from this spec: the next pass ends the task Failed.
                        self.rejected[obj_key(task)] = (task["metadata"]["uid"], exc.message)
                        self.queue.add(obj_key(task))
                        continue
                    raise
            elif isinstance(action, DeleteJob):
                await self.kube.delete(
                    f"/apis/batch/v1/namespaces/{ns}/jobs/{action.name}",
                    resource="jobs",
                    propagation="Background",
                )
            elif isinstance(action, SuspendJob):
                await self.kube.merge_patch(
                    f"/apis/batch/v1/namespaces/{ns}/jobs/{action.name}",
                    {"spec": {"suspend": action.suspend}},
                    resource="jobs",
                )
            elif isinstance(action, DeleteTask):
                await self.kube.delete(
                    task_path(ns, task["metadata"]["name"]), resource="simulationtasks"
                )

    async def _event(self, task: Obj, phase: Phase, reason: str, message: str) -> None:
        meta = task["metadata"]
        now = ts(datetime.now(UTC))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name'][:200]}.{uuid.uuid4().hex[:12]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SimulationTask",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": "Warning" if phase in _WARNING_PHASES else "Normal",
            "reason": reason if reason and reason[0].isupper() else str(phase),
            "message": f"{phase}: {message}"[:1024],
            "source": {"component": "simtask-operator"},
            "reportingComponent": "simtask.dev/operator",
            "reportingInstance": "simtask-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(
                f"/api/v1/namespaces/{meta['namespace']}/events", event, resource="events"
            )
        except ApiError as exc:
            logger.info("event for %s/%s not posted: %s", meta["namespace"], meta["name"], exc)

    def _observe_metrics(self, task: Obj, decision: Decision, group: GroupView | None) -> None:
        group_name = group.name if group is not None else ""
        history = decision.status.get("history") or []
        for t in decision.transitions:
            metrics.TRANSITIONS.labels(str(t.from_phase or ""), str(t.to_phase)).inc()
            if (
                t.from_phase in (Phase.SPOT_PREEMPTED, Phase.EXECUTOR_TERMINATED)
                and t.to_phase == Phase.SUBMITTED
            ):
                metrics.RESUBMISSIONS.labels(str(t.from_phase)).inc()
            if t.to_phase == Phase.STARTED:
                submitted = _last_time(history, Phase.SUBMITTED, t.attempt)
                if submitted is not None:
                    metrics.QUEUE_WAIT.labels(group_name).observe(
                        max((t.time - submitted).total_seconds(), 0)
                    )
            elif t.to_phase not in RUNNING and t.from_phase in RUNNING:
                # The attempt ended (or a kill began): observe its run once, by how it ended.
                started = _last_time(history, Phase.STARTED, t.attempt)
                if started is not None:
                    metrics.RUN_DURATION.labels(group_name, str(t.to_phase)).observe(
                        max((t.time - started).total_seconds(), 0)
                    )


def parse_spec(task: Obj) -> tuple[SimulationTaskSpec | None, str | None]:
    """The spec as the API models read it, or what they find wrong with it (a CRD without
    our validation, say)."""
    try:
        return parse_task_spec(task.get("spec") or {}), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return None, f"spec.{where}: {first['msg']}{more}"


def spec_error(task: Obj) -> str | None:
    """What the API models find wrong with the spec, if anything."""
    return parse_spec(task)[1]


def _may_start_an_attempt(task: Obj, phase: Phase | None) -> bool:
    """Whether this pass may create a Job, so the spec and inputs must be checked first."""
    spec, status = task.get("spec") or {}, task.get("status") or {}
    if phase is None or phase in (Phase.PENDING_INPUT, Phase.HELD):
        return True
    if phase == Phase.SUBMITTED:
        return not status.get("jobName")
    retry = int(spec.get("retry") or 0) > int(status.get("retry") or 0)
    return phase in PREEMPTED or retry


def _last_time(history: list[dict[str, Any]], phase: Phase, attempt: int) -> datetime | None:
    for h in reversed(history):
        if h.get("phase") == phase and int(h.get("attempt") or 0) == attempt:
            return parse_ts(h.get("time"))
    return None
