"""Decide for one SimulationBatch (SPEC §6): which instances to create or change, and the
summary status. Pure: a function of the batch, its instance tasks and the time; no I/O.

An instance is a SimulationTask `<batch>-<index>`; the batch only creates it, and changes
its `hold`, `kill` and (for a retry) its spec and `retry`. Everything else about an instance
(preemption, resubmission, fallback, quotas) is the task controller's, per instance.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simtask import API_VERSION, names, ranges
from simtask.conditions import condition, find_condition
from simtask.durations import parse_duration
from simtask.lifecycle import RUNNING, Phase, parse_phase
from simtask.timestamps import parse_ts, ts

Obj = dict[str, Any]

#: The values of a batch's `status.phase`.
SUBMITTED, RUNNING_PHASE, HELD, SUCCESS, FAILED, KILLED = (
    "Submitted",
    "Running",
    "Held",
    "Success",
    "Failed",
    "Killed",
)
BATCH_PHASES = (SUBMITTED, RUNNING_PHASE, HELD, SUCCESS, FAILED, KILLED)
TERMINAL = frozenset({SUCCESS, FAILED, KILLED})

#: Task spec fields the batch sets on its instances itself.
BATCH_OWNED = ("hold", "kill", "retry", "ttlAfterFinished")

_REFERENCE = re.compile(r"\$\((SIMTASK_[A-Za-z0-9_]+)\)")


@dataclass(frozen=True)
class CreateInstance:
    """Create this instance task (a full manifest)."""

    index: int
    task: Obj


@dataclass(frozen=True)
class PatchInstance:
    """Merge-patch an instance task, guarded by the resourceVersion it was decided from."""

    index: int
    name: str
    patch: Obj


@dataclass(frozen=True)
class DeleteBatch:
    """ttlAfterFinished ran out: delete the batch (its instances go with it)."""


Action = CreateInstance | PatchInstance | DeleteBatch


@dataclass
class BatchDecision:
    status: Obj
    actions: list[Action] = field(default_factory=list)
    #: Look again after this many seconds (ttlAfterFinished).
    requeue_after: float | None = None


@dataclass(frozen=True)
class Instances:
    """A batch's instance tasks by index, and indexes whose name another owner holds."""

    by_index: Mapping[int, Obj]
    taken: frozenset[int] = frozenset()


class SpecError(ValueError):
    """A batch spec the operator cannot run (the CRD's rules should have refused it)."""


def batch_indexes(spec: Mapping[str, Any]) -> list[int]:
    """The indexes of a batch's instances, ascending."""
    if spec.get("indexes") is not None:
        try:
            return ranges.parse(str(spec["indexes"]))
        except ranges.RangeError as exc:
            raise SpecError(f"spec.indexes: {exc}") from exc
    if spec.get("count") is not None:
        return list(range(int(spec["count"])))
    raise SpecError("exactly one of spec.count and spec.indexes says which instances to run")


def parameters_of(spec: Mapping[str, Any], indexes: list[int]) -> dict[int, dict[str, str]]:
    """Each instance's item of spec.parameters, by index (item i for the i-th index)."""
    items = spec.get("parameters")
    if items is None:
        return {}
    if len(items) != len(indexes):
        raise SpecError(
            f"spec.parameters has {len(items)} items for {len(indexes)} instances: "
            "it must have one per instance"
        )
    return {
        index: {str(k): str(v) for k, v in item.items()}
        for index, item in zip(indexes, items, strict=True)
    }


def instance_env(batch_name: str, index: int, params: Mapping[str, str]) -> dict[str, str]:
    """The environment variables an instance's pods get from the batch."""
    env = {names.ENV_BATCH: batch_name, names.ENV_INDEX: str(index)}
    env.update({names.ENV_PARAM_PREFIX + k: v for k, v in params.items()})
    return env


def render(value: str, env: Mapping[str, str]) -> str:
    """`value` with $(SIMTASK_...) references to the instance's variables replaced; others
    are left as written."""
    return _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def instance_spec(batch: Obj, index: int, params: Mapping[str, str]) -> Obj:
    """An instance's spec from the batch's template (without the fields the batch owns)."""
    meta = batch["metadata"]
    spec = batch.get("spec") or {}
    template = copy.deepcopy(dict(spec.get("template") or {}))
    for key in BATCH_OWNED:
        template.pop(key, None)
    env = instance_env(str(meta["name"]), index, params)
    pod_meta = (template.get("podTemplate") or {}).get("metadata") or {}
    for part in ("labels", "annotations"):
        if pod_meta.get(part):
            pod_meta[part] = {k: render(str(v), env) for k, v in pod_meta[part].items()}
    template["hold"] = bool(spec.get("hold"))
    return template


def instance_task(batch: Obj, index: int, params: Mapping[str, str]) -> Obj:
    """The manifest of a new instance task."""
    meta = batch["metadata"]
    name = str(meta["name"])
    labels = {names.LABEL_INDEX: str(index)}
    if (short := names.label_value_or_none(name)) is not None:
        labels[names.LABEL_BATCH] = short
    annotations = {
        names.ANNOTATION_BATCH_RETRY: str(int((batch.get("spec") or {}).get("retry") or 0))
    }
    if params:
        annotations[names.ANNOTATION_PARAMETERS] = json.dumps(dict(params), sort_keys=True)
    return {
        "apiVersion": API_VERSION,
        "kind": "SimulationTask",
        "metadata": {
            "name": names.instance_name(name, index),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "SimulationBatch",
                    "name": name,
                    "uid": str(meta["uid"]),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": instance_spec(batch, index, params),
    }


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> Obj:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`."""
    patch: Obj = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_diff(before, value)
            if inner:
                patch[key] = inner
        elif before != value or key not in old:
            patch[key] = copy.deepcopy(value)
    return patch


# ---------------------------------------------------------------- one instance as the batch sees it


def _retry_pending(task: Obj) -> bool:
    """Whether a retry asked of this task has not yet been honoured by its controller."""
    spec, status = task.get("spec") or {}, task.get("status") or {}
    return int(spec.get("retry") or 0) > int(status.get("retry") or 0)


def finished(task: Obj) -> bool:
    """Whether an instance has ended: its Succeeded condition is set (the task controller
    sets it once the task is terminal, a preemption with a resubmission to come is not),
    and no retry of it is pending."""
    return find_condition(task, "Succeeded") is not None and not _retry_pending(task)


def succeeded(task: Obj) -> bool:
    return ((task.get("status") or {}).get("phase")) == Phase.SUCCESS and finished(task)


def _batch_retry_of(task: Obj) -> int:
    value = ((task.get("metadata") or {}).get("annotations") or {}).get(
        names.ANNOTATION_BATCH_RETRY
    )
    try:
        return int(str(value))
    except ValueError:
        return 0


def _started(task: Obj) -> bool:
    phase = parse_phase((task.get("status") or {}).get("phase"))
    return phase is not None and phase not in (Phase.PENDING_INPUT, Phase.HELD, Phase.SUBMITTED)


# ---------------------------------------------------------------- decide


def decide_batch(batch: Obj, instances: Instances, now: datetime) -> BatchDecision:
    """The status of `batch` and what to do for it, from its instances as they are now."""
    spec = batch.get("spec") or {}
    meta = batch.get("metadata") or {}
    old = batch.get("status") or {}
    status: Obj = {k: copy.deepcopy(v) for k, v in old.items()}
    decision = BatchDecision(status)
    generation = int(meta.get("generation") or 0)
    try:
        indexes = batch_indexes(spec)
        params = parameters_of(spec, indexes)
    except SpecError as exc:
        _set_phase(status, FAILED, "InvalidSpec", str(exc), now)
        _finish(status, old, generation, now, stalled=None)
        return decision

    wanted_retry = int(spec.get("retry") or 0)
    kill, hold = bool(spec.get("kill")), bool(spec.get("hold"))
    max_failed = spec.get("maxFailedInstances")
    parallelism = int(spec.get("parallelism") or len(indexes) or 1)

    counts: dict[str, int] = {"total": len(indexes), "pending": 0}
    counts.update({str(p): 0 for p in Phase})
    ok: list[int] = []
    failed: list[int] = []
    to_retry: list[int] = []
    pending: list[int] = []
    unfinished: list[int] = []
    running = resubmissions = 0
    cpu = gpu = 0.0
    started = False
    for index in indexes:
        task = instances.by_index.get(index)
        if task is None:
            counts["pending"] += 1
            if index not in instances.taken:
                pending.append(index)
            continue
        st = task.get("status") or {}
        phase = parse_phase(st.get("phase")) or Phase.SUBMITTED
        counts[str(phase)] += 1
        resubmissions += int(st.get("resubmissions") or 0)
        for rec in st.get("attempts") or ():
            cpu += float(rec.get("cpuSeconds") or 0)
            gpu += float(rec.get("gpuSeconds") or 0)
        started = started or _started(task)
        if phase in RUNNING:
            running += 1
        if not finished(task):
            unfinished.append(index)
        elif succeeded(task):
            ok.append(index)
        elif _batch_retry_of(task) < wanted_retry and not kill:
            to_retry.append(index)
        else:
            failed.append(index)

    status["instances"] = counts
    status["succeeded"], status["failed"], status["running"] = len(ok), len(failed), running
    status["succeededIndexes"] = ranges.format(ok)
    status["failedIndexes"] = ranges.format(failed)
    status["resubmissions"] = resubmissions
    status["cpuSeconds"] = round(cpu, 3)
    status["gpuSeconds"] = round(gpu, 3)
    status["retry"] = wanted_retry

    # Kill and hold reach every unfinished instance; a kill stops all dispatch.
    for index in unfinished:
        task = instances.by_index[index]
        tspec = task.get("spec") or {}
        change: Obj = {}
        if kill and not tspec.get("kill"):
            change["kill"] = True
        if bool(tspec.get("hold")) != hold and not kill:
            change["hold"] = hold
        if change:
            decision.actions.append(_patch(task, index, {"spec": change}))

    exceeded = max_failed is not None and len(failed) > int(max_failed)
    dispatch = not (kill or hold or exceeded)
    free = max(parallelism - len(unfinished), 0) if dispatch else 0
    for index in to_retry[:free]:
        task = instances.by_index[index]
        decision.actions.append(_retry(batch, task, index, params.get(index, {}), wanted_retry))
    free -= min(free, len(to_retry))
    for index in pending[:free]:
        decision.actions.append(
            CreateInstance(index, instance_task(batch, index, params.get(index, {})))
        )

    busy = bool(unfinished) or bool(decision.actions)
    taken = sorted(instances.taken)
    stalled = None
    if taken:
        which = ", ".join(names.instance_name(str(meta.get("name")), i) for i in taken[:5])
        stalled = (
            "InstanceNameTaken",
            f"SimulationTasks named {which} exist and belong to another owner; "
            "delete or rename them",
        )
    if kill and not busy:
        _set_phase(status, KILLED, "Killed", "killed by the user (spec.kill)", now)
    elif kill:
        _set_phase(status, RUNNING_PHASE, "Killing", f"killing {len(unfinished)} instances", now)
    elif exceeded and not busy:
        _set_phase(
            status,
            FAILED,
            "MaxFailedInstancesExceeded",
            f"{len(failed)} instances failed (indexes {status['failedIndexes']}), more than "
            f"spec.maxFailedInstances {max_failed}",
            now,
        )
    elif exceeded:
        _set_phase(
            status,
            RUNNING_PHASE,
            "MaxFailedInstancesExceeded",
            f"{len(failed)} instances failed, more than spec.maxFailedInstances {max_failed}: "
            f"no new instance starts; {len(unfinished)} still running",
            now,
        )
    elif not busy and not pending and not to_retry and not taken:
        if failed:
            _set_phase(
                status,
                FAILED,
                "InstancesFailed",
                f"{len(failed)} of {len(indexes)} instances did not succeed "
                f"(indexes {status['failedIndexes']})",
                now,
            )
        else:
            _set_phase(status, SUCCESS, "Succeeded", f"all {len(indexes)} instances succeeded", now)
    elif hold:
        _set_phase(
            status,
            HELD,
            "Held",
            f"spec.hold is true: no new instance starts; {len(unfinished)} run on",
            now,
        )
    elif started or ok or failed:
        _set_phase(
            status,
            RUNNING_PHASE,
            "Running",
            f"{len(ok)} succeeded, {len(failed)} failed, {len(unfinished)} unfinished, "
            f"{counts['pending']} not started of {len(indexes)}",
            now,
        )
    else:
        _set_phase(
            status, SUBMITTED, "Submitted", f"{len(indexes)} instances, none started yet", now
        )

    if status["phase"] != SUBMITTED and not status.get("startTime"):
        status["startTime"] = ts(now)
    _finish(status, old, generation, now, stalled=stalled)
    _ttl_after_finished(batch, status, decision, now)
    return decision


def _patch(task: Obj, index: int, patch: Obj) -> PatchInstance:
    meta = task["metadata"]
    body = copy.deepcopy(patch)
    body.setdefault("metadata", {})["resourceVersion"] = meta.get("resourceVersion")
    return PatchInstance(index, str(meta["name"]), body)


def _retry(
    batch: Obj, task: Obj, index: int, params: Mapping[str, str], wanted: int
) -> PatchInstance:
    """Run a failed instance again as a new attempt, with the batch's current template."""
    tspec = task.get("spec") or {}
    new_spec = instance_spec(batch, index, params)
    new_spec["kill"] = False
    new_spec["retry"] = int(tspec.get("retry") or 0) + 1
    old_spec = {k: v for k, v in tspec.items()}
    spec_patch = merge_diff(old_spec, new_spec)
    for key in ("kill", "retry"):
        spec_patch[key] = new_spec[key]
    return _patch(
        task,
        index,
        {
            "metadata": {"annotations": {names.ANNOTATION_BATCH_RETRY: str(wanted)}},
            "spec": spec_patch,
        },
    )


def _set_phase(status: Obj, phase: str, reason: str, message: str, now: datetime) -> None:
    status["phase"], status["reason"], status["message"] = phase, reason, message
    if phase in TERMINAL:
        status.setdefault("completionTime", ts(now))
    else:
        status.pop("completionTime", None)


def _finish(
    status: Obj, old: Obj, generation: int, now: datetime, stalled: tuple[str, str] | None
) -> None:
    status["observedGeneration"] = generation
    status["conditions"] = batch_conditions(
        old.get("conditions") or [],
        str(status["phase"]),
        str(status.get("reason") or status["phase"]),
        str(status.get("message") or ""),
        generation,
        now,
        stalled,
    )


def batch_conditions(
    old: list[Obj],
    phase: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    stalled: tuple[str, str] | None = None,
) -> list[Obj]:
    """Ready, Reconciling and Stalled (kstatus, Argo CD), and Succeeded and Failed once the
    batch has ended (`kubectl wait --for=condition=Succeeded`)."""
    terminal = phase in TERMINAL
    success = phase == SUCCESS
    wanted = [
        ("Ready", "True" if success else "False", reason, message),
        ("Reconciling", "False" if terminal else "True", reason, message),
        ("Stalled", "True" if terminal and not success else "False", reason, message),
    ]
    if stalled is not None and not terminal:
        wanted[2] = ("Stalled", "True", *stalled)
    if terminal:
        wanted += [
            ("Succeeded", "True" if success else "False", reason, message),
            ("Failed", "False" if success else "True", reason, message),
        ]
    return [condition(old, *w, generation, now) for w in wanted]


def _ttl_after_finished(batch: Obj, status: Obj, decision: BatchDecision, now: datetime) -> None:
    ttl = (batch.get("spec") or {}).get("ttlAfterFinished")
    if ttl is None or status.get("phase") not in TERMINAL:
        return
    done = parse_ts(status.get("completionTime"))
    if done is None:
        return
    left = (done + parse_duration(str(ttl)) - now).total_seconds()
    if left <= 0:
        decision.actions.append(DeleteBatch())
    else:
        decision.requeue_after = left
