"""Act: observe a task from the caches, decide, create/delete Jobs, write the status once."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import ValidationError

from simtask import GROUP, VERSION, keptlogs, metrics, names
from simtask.api import SimulationTaskSpec, TaskInput, parse_task_spec
from simtask.batchcontroller import BatchController
from simtask.builders import job_attempt
from simtask.conditions import find_condition
from simtask.decide import (
    CreateJob,
    Decision,
    DeleteJob,
    DeleteTask,
    GroupView,
    KeepLog,
    Observed,
    SuspendJob,
    Transition,
    decide,
    job_finished,
)
from simtask.groupcontroller import GroupController
from simtask.informers import (
    Informer,
    Key,
    Listener,
    Obj,
    Store,
    obj_key,
    obj_uid,
    same_version,
    trim_metadata,
)
from simtask.kube import ApiError, Kube
from simtask.lifecycle import ALWAYS_TERMINAL, PREEMPTED, RUNNING, Phase, parse_phase
from simtask.machinegroups import GroupBook
from simtask.podstate import missing_secret_inputs, pick_pod, waiting_to_mount
from simtask.timestamps import parse_ts, ts
from simtask.workqueue import WorkQueue

logger = logging.getLogger(__name__)

TASKS_PATH = f"/apis/{GROUP}/{VERSION}"

#: Transitions whose Event is a Warning: ways a task or attempt ends that the user did not ask for.
_WARNING_PHASES = (ALWAYS_TERMINAL | PREEMPTED) - {Phase.SUCCESS, Phase.KILLED}

#: Moves every run makes: no Event of their own.
_ROUTINE_PHASES = frozenset(
    {Phase.STARTED, Phase.COMPUTATION_STARTED, Phase.COMPUTATION_ENDED, Phase.PENDING_KILLED}
)

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


class ActionFailed(Exception):
    """An action of a pass failed; `reason` (one CamelCase word) and `message` are what the
    task's status shows if it keeps failing."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


#: How often at most a MachineGroup's status follows its tasks' moves.
GROUP_STATUS_EVERY = 1.0
#: How often a task whose pod waits for its volumes reads the kubelet's events again.
MOUNT_RECHECK_SECONDS = 5.0
#: How long queue positions may lag behind the queue: one refresh of a group's waiting
#: tasks at most this often, instead of a pass of every one on every move of the queue.
POSITION_REFRESH = 2.0
#: Batches reconciled at once.
BATCH_WORKERS = 2
#: Failures in a row of the same task after which its status shows the error (Stalled).
STALL_AFTER = 3
#: Logs read at once at most, and how long one read may take: a log is read beside the
#: workers, never holding one up, and a log that cannot be read is only a warning.
LOG_READS = 4
LOG_READ_TIMEOUT = 20.0
#: A pod bound to a node the cache does not have is taken as lost once it has been bound at
#: least this long (the node watch may lag the pod watch by a little, never by this much).
UNKNOWN_NODE_GRACE = 10.0


def _event_job_uid(obj: Obj) -> list[Hashable]:
    uid = (obj.get("involvedObject") or {}).get("uid")
    return [uid] if uid else []


def _containers_resources(spec: Obj) -> list[Obj]:
    return [
        {"name": c.get("name"), "resources": c.get("resources") or {}}
        for c in spec.get("containers") or ()
    ]


def _trim_pod(pod: Obj) -> None:
    """A pod as podstate reads it: metadata, status, and of the spec only where it runs and
    its containers' names and resources (the volumes, env and commands are the Job's)."""
    trim_metadata(pod)
    spec = pod.get("spec") or {}
    kept = {k: spec[k] for k in ("nodeName", "terminationGracePeriodSeconds") if k in spec}
    pod["spec"] = {**kept, "containers": _containers_resources(spec)}


def _trim_job(job: Obj) -> None:
    """A Job as the operator reads it: metadata, status, suspend, and its template's
    containers' names and resources (for compute seconds)."""
    trim_metadata(job)
    spec = job.get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    kept = {k: spec[k] for k in ("suspend", "activeDeadlineSeconds") if k in spec}
    job["spec"] = {**kept, "template": {"spec": {"containers": _containers_resources(template)}}}


def _trim_node(node: Obj) -> None:
    trim_metadata(node)
    status = node.get("status") or {}
    for key in ("images", "volumesInUse", "volumesAttached", "daemonEndpoints", "nodeInfo"):
        status.pop(key, None)


class Controller:
    """The caches, the work queues and the workers: one event path, in one asyncio loop.

    Every kind the operator reads comes from an `Informer` of its own; their listeners only
    add keys to the work queues. `start()` fills the caches (a standby replica stops there:
    warm, but idle); `run()` runs the workers, on the leader only.
    """

    def __init__(
        self,
        kube: Kube,
        *,
        workers: int = 8,
        read_timeout: float = 270.0,
        namespaces: tuple[str, ...] = (),
        check_secret_inputs: bool = True,
    ) -> None:
        self.kube = kube
        #: The namespaces served (namespace-scoped install); () for the whole cluster.
        self.namespaces = namespaces
        #: Whether Secret inputs are looked up (the operator may read Secrets), or left to
        #: the kubelet, whose mount failure then tells the task (see `_mount_failures`).
        self.check_secret_inputs = check_secret_inputs
        self.queue = WorkQueue(metrics=metrics.QueueMetrics("SimulationTask"))
        self.group_queue = WorkQueue(metrics=metrics.QueueMetrics("MachineGroup"))
        #: Jobs the API server refused as invalid, by task: (task uid, message).
        self.rejected: dict[Key, tuple[str, str]] = {}
        #: The last failure of each task's pass: (task uid, reason, message).
        self.failures: dict[Key, tuple[str, str, str]] = {}
        #: Nodes seen deleted, with when (monotonic).
        self.deleted_nodes: dict[str, float] = {}
        self.tasks = Store()
        self.groups = Store()
        self.jobs = Store({"task": _task_uid})
        self.pods = Store({"task": _task_uid, "node": _node_name})
        self.nodes = Store()
        self.job_events = Store({"job": _event_job_uid})
        self.book = GroupBook(self.tasks, self.groups, self.nodes, self.jobs)
        self.group_controller = GroupController(kube, self.book, self.group_queue, self.queue.add)
        self.batches = Store()
        self.batch_queue = WorkQueue(metrics=metrics.QueueMetrics("SimulationBatch"))
        self.batch_controller = BatchController(
            kube, self.batches, self.tasks, self.batch_queue, self.queue.add
        )
        self.workers = workers
        self._informer_tasks: list[asyncio.Task[None]] = []
        self._log_reads = asyncio.Semaphore(LOG_READS)
        self._log_tasks: set[asyncio.Task[None]] = set()

        def restart(resource: str, why: str) -> None:
            metrics.WATCH_RESTARTS.labels(resource, why).inc()

        def informer(
            resource: str, path: str, store: Store, listener: Listener, **kw: Any
        ) -> Informer:
            return Informer(
                resource,
                path,
                kube.watch_request,
                store,
                listeners=[listener],
                on_restart=restart,
                read_timeout=read_timeout,
                # The API server ends a watch after this (the informer resumes it), so only
                # a dead connection is silent for the whole read timeout: bookmarks alone
                # do not come often enough to count on.
                watch_timeout=max(int(read_timeout * 0.8), 1),
                **kw,
            )

        def namespaced(
            resource: str, group_path: str, store: Store, listener: Listener, **kw: Any
        ) -> list[Informer]:
            """One informer for the whole cluster, or one per namespace when scoped."""
            if not self.namespaces:
                return [informer(resource, f"{group_path}/{resource}", store, listener, **kw)]
            return [
                informer(
                    resource,
                    f"{group_path}/namespaces/{ns}/{resource}",
                    store,
                    listener,
                    namespace=ns,
                    **kw,
                )
                for ns in self.namespaces
            ]

        owned = names.LABEL_TASK_UID
        self.informers = [
            *namespaced("simulationtasks", TASKS_PATH, self.tasks, self._on_task),
            informer("machinegroups", f"{TASKS_PATH}/machinegroups", self.groups, self._on_group),
            *namespaced(
                "simulationbatches", TASKS_PATH, self.batches, self.batch_controller.on_batch
            ),
            *namespaced(
                "jobs",
                "/apis/batch/v1",
                self.jobs,
                self._on_owned,
                label_selector=owned,
                trim=_trim_job,
            ),
            *namespaced(
                "pods", "/api/v1", self.pods, self._on_owned, label_selector=owned, trim=_trim_pod
            ),
            informer("nodes", "/api/v1/nodes", self.nodes, self._on_node, trim=_trim_node),
            # Why a Job cannot create its pod is only told in its events.
            *namespaced(
                "events",
                "/api/v1",
                self.job_events,
                self._on_job_event,
                field_selector="involvedObject.kind=Job,reason=FailedCreate",
            ),
        ]
        self.synced = asyncio.Event()
        #: Groups whose queued tasks will look at their queue positions again soon.
        self._position_refresh: dict[str, asyncio.TimerHandle] = {}

    # -- lifecycle

    async def start(self) -> None:
        """Start the informers and wait until every cache has its first list."""
        for inf in self.informers:
            task = asyncio.create_task(inf.run(), name=f"informer-{inf.resource}")
            self._informer_tasks.append(task)
        await asyncio.gather(*(inf.synced.wait() for inf in self.informers))
        self.synced.set()
        logger.info(
            "caches synced: %d tasks, %d groups, %d jobs, %d pods, %d nodes",
            len(self.tasks),
            len(self.groups),
            len(self.jobs),
            len(self.pods),
            len(self.nodes),
        )

    async def run(self) -> None:
        """Reconcile until cancelled: every task and group once, then as events come."""
        await self.synced.wait()
        for key in list(self.tasks.objects):
            self.queue.add(key)
        for key in list(self.groups.objects):
            self.group_queue.add(key[1])
        workers = [
            self._worker(self.queue, self.reconcile, "SimulationTask") for _ in range(self.workers)
        ]
        workers.append(
            self._worker(self.group_queue, self.group_controller.reconcile, "MachineGroup")
        )
        workers.append(self._gauges())
        for key in list(self.batches.objects):
            self.batch_queue.add(key)
        workers += [
            self._worker(self.batch_queue, self.batch_controller.reconcile, "SimulationBatch")
            for _ in range(BATCH_WORKERS)
        ]
        workers.append(self.batch_controller.gauges())
        await asyncio.gather(*workers)

    async def stop(self) -> None:
        for t in [*self._informer_tasks, *self._log_tasks]:
            t.cancel()
        await asyncio.gather(*self._informer_tasks, *self._log_tasks, return_exceptions=True)

    def informers_alive(self) -> bool:
        """Whether every informer is still running (none died of an unexpected error)."""
        return all(not t.done() for t in self._informer_tasks)

    # -- events into the queues

    def _on_task(self, etype: str, body: Obj, prev: Obj | None) -> None:
        key = obj_key(body)
        if etype == "DELETED":
            self.queue.forget(key)
            self.book.forget(key)
            self.failures.pop(key, None)
            self.rejected.pop(key, None)
            return
        if prev is not None and same_version(prev, body):
            return  # The echo of our own status write: the pass that wrote it saw all this.
        self.queue.add(key)

    def _on_group(self, etype: str, body: Obj, prev: Obj | None) -> None:
        """A MachineGroup changed: its status is looked at again, and its tasks if they
        may see a difference."""
        name = str((body.get("metadata") or {}).get("name"))
        self.group_queue.add(name)
        now = body if etype != "DELETED" else None

        def what_tasks_see(group: Obj | None) -> Any:
            meta = (group or {}).get("metadata") or {}
            phase = ((group or {}).get("status") or {}).get("phase")
            return (group is None, meta.get("generation"), meta.get("deletionTimestamp"), phase)

        # Our own status writes (task counts) change nothing for the tasks: waking every task
        # of the group on each of them would make every transition cost a pass per task.
        if what_tasks_see(prev) != what_tasks_see(now):
            for key in self.book.tasks_of(name):
                self.queue.add(key)

    def _task_key_for_uid(self, uid: Hashable) -> Key | None:
        keys = self.tasks.keys_by("uid", uid)
        return next(iter(keys), None)

    def _on_owned(self, etype: str, obj: Obj, prev: Obj | None) -> None:
        for uid in _task_uid(obj):
            key = self._task_key_for_uid(uid)
            if key is not None:
                # What a running task's pod or Job shows goes before new tasks: a burst of
                # submissions must not hold back the status of tasks already running.
                self.queue.add(key, urgent=True)
        group = ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_MACHINE_GROUP)
        if group and obj.get("kind") == "Job" and (etype == "DELETED" or job_finished(obj)):
            self._admit_next(group)

    def _admit_next(self, group: str) -> None:
        """A slot of `group` may be free: as many queued tasks as there are free slots look
        again now; the others' queue positions are refreshed a little later, all at once."""
        for key in self.book.next_in_line(group):
            self.queue.add(key)
        if group not in self._position_refresh:
            loop = asyncio.get_running_loop()
            self._position_refresh[group] = loop.call_later(
                POSITION_REFRESH, self._refresh_positions, group
            )

    def _refresh_positions(self, group: str) -> None:
        self._position_refresh.pop(group, None)
        for key in self.book.stale_positions(group):
            self.queue.add(key)

    def _on_node(self, etype: str, obj: Obj, prev: Obj | None) -> None:
        name = str((obj.get("metadata") or {}).get("name"))
        if etype == "DELETED":
            self.deleted_nodes[name] = time.monotonic()
        elif etype == "ADDED":
            self.deleted_nodes.pop(name, None)
        if etype == "MODIFIED" and not _node_changed(prev, obj):
            return
        for group in list(self.groups.objects):
            self.group_queue.add(group[1])  # Group capacity may have changed.
        if etype == "ADDED":
            return
        for pod in self.pods.by("node", name):
            self._on_owned(etype, pod, None)

    def _on_job_event(self, etype: str, obj: Obj, prev: Obj | None) -> None:
        involved = obj.get("involvedObject") or {}
        job = self.jobs.get((str(involved.get("namespace") or ""), str(involved.get("name"))))
        if job is not None and obj_uid(job) == involved.get("uid"):
            self._on_owned(etype, job, None)

    # -- workers

    async def _worker(
        self, queue: WorkQueue, handle: Callable[[Any], Awaitable[None]], what: str
    ) -> None:
        """Process keys of `queue` with `handle`; a key that fails comes back with backoff."""
        while True:
            key = await queue.get()
            t0 = time.perf_counter()
            try:
                await handle(key)
            except asyncio.CancelledError:
                raise
            except (ApiError, ActionFailed) as exc:
                api = exc if isinstance(exc, ApiError) else exc.__cause__
                if isinstance(api, ApiError) and api.code == 409 and isinstance(exc, ApiError):
                    queue.add_after(key, 0.5)  # Someone wrote first: look again.
                elif isinstance(exc, ApiError) and exc.code == 404:
                    # The object was deleted while the pass ran: its watch event follows,
                    # and there is nothing left to do for it.
                    logger.debug("%s %s is gone: %s", what, key, exc)
                elif isinstance(api, ApiError) and "NamespaceTerminating" in api.causes:
                    # Its namespace is being deleted, and the task with it: nothing is wrong.
                    queue.add_rate_limited(key)
                elif isinstance(exc, ActionFailed):
                    self._failed(queue, key, what, exc.reason, exc.message, "api")
                else:
                    self._failed(queue, key, what, "ApiError", str(exc), "api")
            except Exception as exc:
                logger.exception("%s %s failed", what, key)
                self._failed(queue, key, what, "InternalError", repr(exc), "internal")
            else:
                queue.succeeded(key)
                if queue is self.queue and self.failures.pop(key, None) is not None:  # type: ignore[call-overload]
                    queue.add(key)  # Clear the error the status may show.
            finally:
                if queue is self.queue:
                    metrics.RECONCILE_DURATION.observe(time.perf_counter() - t0)
                queue.done(key)

    def _failed(
        self, queue: WorkQueue, key: Any, what: str, reason: str, message: str, kind: str
    ) -> None:
        metrics.RECONCILE_ERRORS.labels(kind).inc()
        metrics.WORKQUEUE_RETRIES.labels(what).inc()
        delay = queue.add_rate_limited(key)
        if kind != "internal":
            logger.warning("%s %s: %s: %s (again in %.1fs)", what, key, reason, message, delay)
        if queue is self.queue:
            task = self.tasks.get(key)
            if task is not None:
                self.failures[key] = (obj_uid(task), reason, message)

    def _stalled(self, key: Key, uid: str) -> tuple[str, str] | None:
        """The error a task's passes keep failing with, once it has persisted."""
        failure = self.failures.get(key)
        if failure is None or failure[0] != uid or self.queue.failures(key) < STALL_AFTER:
            return None
        return failure[1], f"{failure[2]} (retrying)"

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
            await asyncio.sleep(5)

    def _gone_nodes(self, pods: dict[int, list[Obj]], status: Obj) -> frozenset[str]:
        """Nodes of these pods that are deleted: seen deleted, or absent from the cache while
        a pod has been bound to them for a while (deleted while the operator was away)."""
        gone: set[str] = set()
        now = datetime.now(UTC)
        for ps in pods.values():
            for pod in ps:
                node = (pod.get("spec") or {}).get("nodeName")
                if not node or self.nodes.get(("", node)) is not None:
                    continue
                bound = parse_ts(
                    (find_condition(pod, "PodScheduled") or {}).get("lastTransitionTime")
                )
                if node in self.deleted_nodes or (
                    bound is not None and (now - bound).total_seconds() > UNKNOWN_NODE_GRACE
                ):
                    gone.add(node)
        recorded = status.get("nodeName")
        if recorded and recorded in self.deleted_nodes and self.nodes.get(("", recorded)) is None:
            gone.add(str(recorded))
        return frozenset(gone)

    # -- one pass

    async def reconcile(self, key: Key) -> None:
        """One pass over one task: observe it from the caches, decide, write, act."""
        task = self.tasks.get(key)
        if task is None or (task.get("metadata") or {}).get("deletionTimestamp"):
            return  # Deleted: the garbage collector removes its Jobs and pods.
        uid = obj_uid(task)
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
        rejected = self.rejected.get(key)
        attempt = int(status.get("attempt") or 0)
        mount_errors: list[str] = []
        if not self.check_secret_inputs and _has_secret_input(task):
            current = pick_pod(pods.get(attempt, ()))
            if current is not None and waiting_to_mount(current):
                mount_errors = await self._mount_failures(current)
                # The kubelet's events reach no watch of ours: look again while it waits.
                self.queue.add_after(key, MOUNT_RECHECK_SECONDS)
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
                gone_nodes=self._gone_nodes(pods, status),
                stalled=self._stalled(key, uid),
                pod_creation_error=self._pod_creation_error(jobs.get(attempt)),
                mount_errors=mount_errors,
            ),
            now,
        )
        for refused in decision.refused:
            logger.warning("%s/%s: refused move %s", *key, refused)
        if not await self._write_status(task, decision):
            return
        if rejected and decision.status.get("phase") == Phase.FAILED:
            self.rejected.pop(key, None)
        await self._act(task, decision)
        if group is not None and (decision.transitions or decision.actions):
            # Its counts: once a second at most, however many of its tasks move.
            self.group_queue.add_after(group.name, GROUP_STATUS_EVERY)
            if group.obj is not None and (group.obj.get("spec") or {}).get("maxConcurrentTasks"):
                self._admit_next(group.name)
        self._observe_metrics(task, decision, group)
        if decision.requeue_after is not None:
            self.queue.add_after(key, decision.requeue_after)

    def _pod_creation_error(self, job: Obj | None) -> str | None:
        """What the latest FailedCreate event of this Job says, if it has one."""
        if job is None:
            return None
        events = self.job_events.by("job", obj_uid(job))
        if not events:
            return None
        latest = max(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return str(latest.get("message") or "the Job controller cannot create its pod")

    async def _mount_failures(self, pod: Mapping[str, Any]) -> list[str]:
        """The Secret inputs the kubelet says it cannot mount for this pod."""
        meta = pod.get("metadata") or {}
        events = await self.kube.request(
            "GET",
            f"/api/v1/namespaces/{meta.get('namespace')}/events",
            resource="events",
            params={"fieldSelector": f"involvedObject.uid={meta.get('uid')},reason=FailedMount"},
        )
        return missing_secret_inputs(events.get("items") or [], str(meta.get("namespace")))

    async def _missing_inputs(self, ns: str, inputs: list[TaskInput]) -> list[str]:
        missing: list[str] = []
        for item in inputs:
            field, ref = item.source()
            if field == "secret" and not self.check_secret_inputs:
                continue  # Left to the kubelet: see _mount_failures.
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

    async def _write_status(self, task: Obj, decision: Decision) -> bool:
        """Write the decided status, if it changed, guarded by the resourceVersion it was
        decided from; False when the task is gone (nothing more to do for it)."""
        old = task.get("status") or {}
        new = decision.status
        if new == old:
            return True
        # Only the fields that changed: a merge patch replaces each one whole, and the
        # history, attempts and conditions need not travel when they did not move.
        patch_status: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
        for gone in set(old) - set(new):
            patch_status[gone] = None
        meta = task["metadata"]
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"], "uid": meta["uid"]},
            "status": patch_status,
        }
        try:
            updated = await self.kube.merge_patch(
                task_path(meta["namespace"], meta["name"], "/status"),
                body,
                resource="simulationtasks",
            )
        except ApiError as exc:
            if exc.code == 404:
                return False  # Deleted meanwhile: its watch event says so soon.
            raise
        self.tasks.apply_write(updated)
        for t in decision.transitions:
            if _tells_the_user(t):
                await self._event(updated, t.to_phase, t.reason, t.message)
        return True

    async def _act(self, task: Obj, decision: Decision) -> None:
        meta = task["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        for action in decision.actions:
            if isinstance(action, CreateJob):
                await self._create_job(task, action.job)
            elif isinstance(action, DeleteJob):
                job = self.jobs.get((ns, action.name))
                try:
                    await self.kube.delete(
                        f"/apis/batch/v1/namespaces/{ns}/jobs/{action.name}",
                        resource="jobs",
                        propagation="Background",
                        uid=obj_uid(job) if job is not None else None,
                    )
                except ApiError as exc:
                    raise ActionFailed(
                        "JobDeleteFailed", f"deleting Job {action.name}: {exc.message}"
                    ) from exc
            elif isinstance(action, SuspendJob):
                try:
                    updated = await self.kube.merge_patch(
                        f"/apis/batch/v1/namespaces/{ns}/jobs/{action.name}",
                        {"spec": {"suspend": action.suspend}},
                        resource="jobs",
                    )
                except ApiError as exc:
                    raise ActionFailed(
                        "JobSuspendFailed", f"suspending Job {action.name}: {exc.message}"
                    ) from exc
                self.jobs.apply_write(updated)
            elif isinstance(action, KeepLog):
                keeping = asyncio.create_task(
                    self._keep_log(task, action), name=f"keep-log-{action.job_name}"
                )
                self._log_tasks.add(keeping)
                keeping.add_done_callback(self._log_tasks.discard)
            elif isinstance(action, DeleteTask):
                current = self.tasks.get(obj_key(task)) or task
                # Only the task that finished, as last seen: not a new one of the same name,
                # nor one whose spec changed meanwhile (a retry raised since, say).
                await self.kube.delete(
                    task_path(ns, meta["name"]),
                    resource="simulationtasks",
                    uid=uid,
                    resource_version=current["metadata"]["resourceVersion"],
                )

    async def _create_job(self, task: Obj, job: Obj) -> None:
        """Create the attempt's Job; an existing Job of that name must be this task's own."""
        meta = task["metadata"]
        ns, name = meta["namespace"], job["metadata"]["name"]
        try:
            created = await self.kube.create(
                f"/apis/batch/v1/namespaces/{ns}/jobs", job, resource="jobs"
            )
            self.jobs.put(created)
            return
        except ApiError as exc:
            if exc.code in (400, 422):
                # Invalid as built from this spec: the next pass ends the task Failed.
                self.rejected[obj_key(task)] = (meta["uid"], exc.message)
                self.queue.add(obj_key(task))
                return
            if exc.code != 409:
                raise ActionFailed(
                    "JobCreateFailed", f"creating Job {name}: {exc.message}"
                ) from exc
        existing = await self.kube.get(
            f"/apis/batch/v1/namespaces/{ns}/jobs/{name}", resource="jobs"
        )
        if existing is None:
            raise ActionFailed("JobCreateFailed", f"Job {name} existed and is gone: creating again")
        owner = _controller_of(existing)
        if owner is not None and owner.get("uid") == meta["uid"]:
            self.jobs.put(existing)  # Ours, created before a restart or by another replica.
            return
        if (
            owner is not None
            and owner.get("kind") == "SimulationTask"
            and owner.get("name") == meta["name"]
        ):
            raise ActionFailed(
                "WaitingForOldJob",
                f"Job {name} of a deleted SimulationTask of the same name is still being "
                "removed by the garbage collector",
            )
        whose = f"{owner.get('kind')} {owner.get('name')}" if owner else "no controller"
        raise ActionFailed(
            "JobNameTaken",
            f"a Job named {name} already exists and belongs to {whose}, not to this task; "
            "delete or rename it",
        )

    async def _keep_log(self, task: Obj, action: KeepLog) -> None:
        """Read the ended attempt's log once from its pod and keep its tail in a ConfigMap
        (SPEC §7). A ConfigMap already there is left alone (kept before a restart, or by
        another replica); a log that cannot be read is a warning, never the task's failure."""
        meta = task["metadata"]
        ns = meta["namespace"]
        what = f"{ns}/{meta['name']}: log of attempt {action.attempt} not kept"
        async with self._log_reads:
            try:
                data = await self.kube.read_tail(
                    f"/api/v1/namespaces/{ns}/pods/{action.pod_name}/log",
                    resource="pods/log",
                    params={
                        "container": names.SIMULATOR_CONTAINER,
                        "tailLines": str(keptlogs.TAIL_LINES),
                    },
                    keep=keptlogs.MAX_LOG_BYTES + 1,
                    timeout=LOG_READ_TIMEOUT,
                )
            except ApiError as exc:
                if exc.code == 404:
                    logger.info("%s: pod %s is gone", what, action.pod_name)
                else:
                    logger.warning("%s: reading pod %s: %s", what, action.pod_name, exc)
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("%s: reading pod %s: %r", what, action.pod_name, exc)
                return
        log, truncated = keptlogs.log_tail(data)
        body = keptlogs.build_log_configmap(task, action.attempt, action.job_name, log, truncated)
        try:
            await self.kube.create(
                f"/api/v1/namespaces/{ns}/configmaps", body, resource="configmaps"
            )
        except ApiError as exc:
            if exc.code == 409:
                return  # Kept already.
            if exc.code == 403 and "NamespaceTerminating" in exc.causes:
                return
            logger.warning("%s: creating ConfigMap %s: %s", what, body["metadata"]["name"], exc)
        else:
            logger.info("%s/%s: kept the log of attempt %d", ns, meta["name"], action.attempt)

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


def _tells_the_user(t: Transition) -> bool:
    """Whether a move is worth an Event: not the steps of every run (queued, bound, running,
    exited 0, being killed), which status.history and the pod's own events already tell,
    but how a task ends, every loss, hold, release, retry, resubmission and missing input."""
    if t.to_phase in _ROUTINE_PHASES:
        return False
    return not (t.to_phase == Phase.SUBMITTED and t.reason == "Submitted")


def _controller_of(obj: Obj) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


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


def _has_secret_input(task: Obj) -> bool:
    return any("secret" in item for item in (task.get("spec") or {}).get("inputs") or ())


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
