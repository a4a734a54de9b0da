"""The Job of one attempt of a SimulationTask, built as a plain dict ready to send to the API."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from simtask import API_VERSION, names
from simtask.durations import parse_duration

Obj = Mapping[str, Any]

#: The extended resource a GPU request is made in.
GPU_RESOURCE = "nvidia.com/gpu"
#: Seconds the simulator gets between SIGTERM and SIGKILL, e.g. to write a checkpoint.
TERMINATION_GRACE_SECONDS = 30
#: Prefix of the volume of each input: `input-<name>`.
INPUT_VOLUME_PREFIX = "input-"
OUTPUTS_VOLUME = "outputs"


def build_job(
    task: Obj,
    attempt: int,
    *,
    group: Obj | None,
    previous_attempt_phase: str | None,
    suspend: bool = False,
) -> dict[str, Any]:
    """The batch/v1 Job that runs attempt `attempt` of `task`, placed on MachineGroup `group`.

    `task` and `group` are the objects as the API returns them; `previous_attempt_phase`
    is the phase the previous attempt ended in (None for the first attempt).
    Raises ValueError for a `spec.timeToLive` that is not a duration.
    """
    meta: Obj = task.get("metadata") or {}
    spec: Obj = task.get("spec") or {}
    task_name = str(meta["name"])
    group_spec: Obj = (group or {}).get("spec") or {}
    group_name = ((group or {}).get("metadata") or {}).get("name")

    labels: dict[str, str] = {
        names.LABEL_TASK_UID: str(meta["uid"]),
        names.LABEL_ATTEMPT: str(attempt),
    }
    if (short := names.label_value_or_none(task_name)) is not None:
        labels[names.LABEL_TASK] = short
    if group_name and (group_label := names.label_value_or_none(str(group_name))) is not None:
        labels[names.LABEL_MACHINE_GROUP] = group_label

    template_meta: Obj = (spec.get("podTemplate") or {}).get("metadata") or {}
    pod_labels = {**(template_meta.get("labels") or {}), **labels}
    pod_annotations = copy.deepcopy(dict(template_meta.get("annotations") or {}))

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [
            _container(task_name, spec, attempt, previous_attempt_phase, batch_env(task))
        ],
    }
    if spec.get("timeToLive"):
        pod_spec["activeDeadlineSeconds"] = active_deadline_seconds(str(spec["timeToLive"]))
    if spec.get("priorityClassName"):
        pod_spec["priorityClassName"] = spec["priorityClassName"]
    # The group's selector wins: it is what makes a node part of the group.
    node_selector = {**(spec.get("nodeSelector") or {}), **(group_spec.get("nodeSelector") or {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _dedupe(
        [*(group_spec.get("tolerations") or ()), *(spec.get("tolerations") or ())]
    )
    if tolerations:
        pod_spec["tolerations"] = tolerations
    volumes = _volumes(spec)
    if volumes:
        pod_spec["volumes"] = volumes

    template: dict[str, Any] = {"metadata": {"labels": pod_labels}, "spec": pod_spec}
    if pod_annotations:
        template["metadata"]["annotations"] = pod_annotations

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.job_name(task_name, attempt),
            "namespace": meta["namespace"],
            "labels": dict(labels),
            "annotations": {names.ANNOTATION_TASK_NAME: task_name},
            "ownerReferences": [task_owner_reference(task_name, str(meta["uid"]), controller=True)],
        },
        "spec": {
            # The operator, not the Job controller, decides on new attempts.
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "podReplacementPolicy": "Failed",
            "suspend": suspend,
            "template": template,
        },
    }


def job_attempt(job: Obj) -> int | None:
    """The attempt number a Job's label carries; None when absent or not a number."""
    value = ((job.get("metadata") or {}).get("labels") or {}).get(names.LABEL_ATTEMPT)
    try:
        attempt = int(str(value))
    except ValueError:
        return None
    return attempt if attempt >= 1 else None


def active_deadline_seconds(time_to_live: str) -> int:
    """`spec.timeToLive` as whole seconds for the pod's activeDeadlineSeconds (at least 1)."""
    return max(1, math.ceil(parse_duration(time_to_live).total_seconds()))


def batch_env(task: Obj) -> dict[str, str]:
    """SIMTASK_BATCH, SIMTASK_INDEX and SIMTASK_PARAM_<KEY> of an instance of a
    SimulationBatch (from its controller reference, index label and parameters
    annotation); nothing for a task of no batch."""
    meta: Obj = task.get("metadata") or {}
    batch = next(
        (
            ref.get("name")
            for ref in meta.get("ownerReferences") or ()
            if ref.get("controller") and ref.get("kind") == "SimulationBatch"
        ),
        None,
    )
    index = (meta.get("labels") or {}).get(names.LABEL_INDEX)
    if not batch or index is None:
        return {}
    env = {names.ENV_BATCH: str(batch), names.ENV_INDEX: str(index)}
    try:
        params = json.loads(
            (meta.get("annotations") or {}).get(names.ANNOTATION_PARAMETERS) or "{}"
        )
    except ValueError:
        params = {}
    if isinstance(params, dict):
        env.update({names.ENV_PARAM_PREFIX + str(k): str(v) for k, v in params.items()})
    return env


def _container(
    task_name: str,
    spec: Obj,
    attempt: int,
    previous_attempt_phase: str | None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The one `simulator` container."""
    ours = {
        **(extra_env or {}),
        names.ENV_TASK: task_name,
        names.ENV_ATTEMPT: str(attempt),
        names.ENV_PREVIOUS_ATTEMPT_PHASE: previous_attempt_phase or "",
    }
    # Ours replace any of the same name: the simulator must be able to trust them.
    env = [copy.deepcopy(dict(e)) for e in spec.get("env") or () if e.get("name") not in ours]
    env += [{"name": key, "value": value} for key, value in ours.items()]
    container: dict[str, Any] = {
        "name": names.SIMULATOR_CONTAINER,
        "image": spec["image"],
        "env": env,
        "resources": _resources(spec.get("resources") or {}),
        # A failing simulator's last log lines end up in its terminated state's message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    for key in ("command", "args"):
        if spec.get(key):
            container[key] = [str(part) for part in spec[key]]
    if spec.get("workingDir"):
        container["workingDir"] = spec["workingDir"]
    mounts = _volume_mounts(spec)
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _resources(resources: Obj) -> dict[str, Any]:
    """Requests from `spec.resources`; the memory limit equals the request so OOM is meaningful."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for ours, theirs in (
        ("cpu", "cpu"),
        ("memory", "memory"),
        ("ephemeralStorage", "ephemeral-storage"),
    ):
        if resources.get(ours) not in (None, ""):
            requests[theirs] = str(resources[ours])
    if "memory" in requests:
        limits["memory"] = requests["memory"]
    gpu = int(resources.get("gpu") or 0)
    if gpu > 0:
        requests[GPU_RESOURCE] = str(gpu)
        limits[GPU_RESOURCE] = str(gpu)
    result: dict[str, Any] = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


def _input_source(item: Obj) -> dict[str, Any]:
    """The volume source of one `spec.inputs[]` entry.

    The CRD names the object with a plain string (`configMap: settings`); the volume-source
    form (`configMap: {name: settings}`) is accepted too.
    """
    for kind, key in (
        ("configMap", "name"),
        ("secret", "secretName"),
        ("persistentVolumeClaim", "claimName"),
    ):
        value = item.get(kind)
        if value is None:
            continue
        if isinstance(value, str):
            source: dict[str, Any] = {key: value}
        else:
            source = copy.deepcopy(dict(value))
            if key not in source and "name" in source:
                source[key] = source.pop("name")
        if kind == "persistentVolumeClaim":
            source["readOnly"] = True
        return {kind: source}
    raise ValueError(
        f"input {item.get('name')!r} needs one of configMap, secret or persistentVolumeClaim"
    )


def _outputs_claim(spec: Obj) -> str | None:
    """The claim `spec.outputs.persistentVolumeClaim` names (a string, or `{claimName}`)."""
    claim = (spec.get("outputs") or {}).get("persistentVolumeClaim")
    if isinstance(claim, Mapping):
        claim = claim.get("claimName") or claim.get("name")
    return str(claim) if claim else None


def _volumes(spec: Obj) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": INPUT_VOLUME_PREFIX + str(item["name"]), **_input_source(item)}
        for item in spec.get("inputs") or ()
    ]
    claim = _outputs_claim(spec)
    if claim is not None:
        volumes.append({"name": OUTPUTS_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    return volumes


def _volume_mounts(spec: Obj) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {
            "name": INPUT_VOLUME_PREFIX + str(item["name"]),
            "mountPath": f"{names.INPUTS_DIR}/{item['name']}",
            "readOnly": True,
        }
        for item in spec.get("inputs") or ()
    ]
    if _outputs_claim(spec) is not None:
        mounts.append({"name": OUTPUTS_VOLUME, "mountPath": names.OUTPUTS_DIR})
    return mounts


def _dedupe(items: Sequence[Obj]) -> list[dict[str, Any]]:
    """`items` without repeats, in first-seen order."""
    result: list[dict[str, Any]] = []
    for item in items:
        plain = copy.deepcopy(dict(item))
        if plain not in result:
            result.append(plain)
    return result


def task_owner_reference(task_name: str, uid: str, *, controller: bool) -> dict[str, Any]:
    """An owner reference to a SimulationTask: what the garbage collector deletes with it. A
    controller reference also blocks the task's foreground deletion until it is gone."""
    ref: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "SimulationTask",
        "name": task_name,
        "uid": uid,
        "controller": controller,
    }
    if controller:
        ref["blockOwnerDeletion"] = True
    return ref
