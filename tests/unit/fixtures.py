"""Kubernetes objects as the API server returns them (camelCase JSON dicts), for unit tests.

Times are seconds after `T0`; `at(s)` is the datetime the operator should read back and
`ts(s)` the RFC 3339 string the API server writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from simtask import API_VERSION, names

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
NAMESPACE = "research"
TASK_NAME = "cfd-wing"
TASK_UID = "8a4c3f2e-1b7d-4e59-9c1a-0f6d2b3e4a51"
JOB_UID = "d2f0a6b1-5c3e-4f8a-b9d7-2e1c0a9f8b63"
POD_UID = "3e9b7c1d-0a2f-4d6e-8b5c-7f1a2d3c4e5b"
IMAGE = "ghcr.io/acme/openfoam-runner:2.4.1"
IMAGE_ID = "ghcr.io/acme/openfoam-runner@sha256:" + "ab" * 32
CONTAINER_ID = "containerd://" + "5f" * 32
EPOCH = "1970-01-01T00:00:00Z"

Obj = dict[str, Any]


def at(seconds: float) -> datetime:
    """The datetime `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    """The API server's RFC 3339 string for `seconds` after T0."""
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- SimulationTask and MachineGroup ------------------------------------------------


def task(name: str = TASK_NAME, **spec: Any) -> Obj:
    """A SimulationTask as `kubectl get -o json` shows it, with `spec` fields given."""
    body: Obj = {"image": IMAGE, **spec}
    return {
        "apiVersion": API_VERSION,
        "kind": "SimulationTask",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": TASK_UID,
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": ts(-60),
        },
        "spec": body,
        "status": {"phase": "Submitted", "attempt": 1},
    }


def machine_group(
    name: str = "cpu-spot",
    *,
    spot: bool | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Obj] = (),
) -> Obj:
    """A cluster-scoped MachineGroup."""
    spec: Obj = {"nodeSelector": dict(node_selector or {"cloud.google.com/gke-nodepool": name})}
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if spot is not None:
        spec["spot"] = spot
    return {
        "apiVersion": API_VERSION,
        "kind": "MachineGroup",
        "metadata": {
            "name": name,
            "uid": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
            "resourceVersion": "1022",
            "generation": 1,
            "creationTimestamp": ts(-3600),
        },
        "spec": spec,
        "status": {"phase": "Active"},
    }


# --- Job ------------------------------------------------------------------------------


def condition(
    kind: str,
    status: str = "True",
    reason: str | None = None,
    message: str | None = None,
    *,
    when: float = 0.0,
    probe: bool = False,
) -> Obj:
    """A status condition; pods and Jobs also carry lastProbeTime."""
    cond: Obj = {"type": kind, "status": status, "lastTransitionTime": ts(when)}
    if probe:
        cond["lastProbeTime"] = None
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def job_condition(kind: str, reason: str, message: str, *, when: float) -> Obj:
    """A Job condition as the Job controller writes it."""
    cond = condition(kind, "True", reason, message, when=when)
    cond["lastProbeTime"] = ts(when)
    return cond


def job_complete(when: float) -> list[Obj]:
    """The conditions of a Job whose pod succeeded (Kubernetes >= 1.31)."""
    return [
        job_condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            when=when,
        ),
        job_condition(
            "Complete", "CompletionsReached", "Reached expected number of succeeded pods", when=when
        ),
    ]


def job_failed(when: float, reason: str = "BackoffLimitExceeded") -> list[Obj]:
    """The conditions of a Job that failed."""
    message = {
        "BackoffLimitExceeded": "Job has reached the specified backoff limit",
        "DeadlineExceeded": "Job was active longer than specified deadline",
    }.get(reason, reason)
    return [
        job_condition("FailureTarget", reason, message, when=when),
        job_condition("Failed", reason, message, when=when),
    ]


def job(
    attempt: int = 1,
    *,
    task_name: str = TASK_NAME,
    cpu: str = "2",
    memory: str = "4Gi",
    gpu: int = 0,
    conditions: Iterable[Obj] = (),
    active: int = 0,
    failed: int = 0,
    succeeded: int = 0,
    suspend: bool = False,
    completion: float | None = None,
) -> Obj:
    """A Job of one attempt as the Job controller shows it (defaults filled in by the API)."""
    labels = {
        names.LABEL_TASK_UID: TASK_UID,
        names.LABEL_TASK: task_name,
        names.LABEL_ATTEMPT: str(attempt),
    }
    requests: Obj = {"cpu": cpu, "memory": memory}
    limits: Obj = {"memory": memory}
    if gpu:
        requests["nvidia.com/gpu"] = str(gpu)
        limits["nvidia.com/gpu"] = str(gpu)
    status: Obj = {
        "active": active,
        "ready": active,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }
    if failed:
        status["failed"] = failed
    if succeeded:
        status["succeeded"] = succeeded
    if not suspend:
        status["startTime"] = ts(0)
    conds = list(conditions)
    if suspend:
        conds.append(job_condition("Suspended", "JobSuspended", "Job suspended", when=0))
    if conds:
        status["conditions"] = conds
    if completion is not None:
        status["completionTime"] = ts(completion)
    name = names.job_name(task_name, attempt)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": JOB_UID,
            "resourceVersion": "48250",
            "generation": 1,
            "creationTimestamp": ts(0),
            "labels": labels,
            "annotations": {names.ANNOTATION_TASK_NAME: task_name},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "SimulationTask",
                    "name": task_name,
                    "uid": TASK_UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "completionMode": "NonIndexed",
            "manualSelector": False,
            "podReplacementPolicy": "Failed",
            "suspend": suspend,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": JOB_UID}},
            "template": {
                "metadata": {
                    "labels": {
                        **labels,
                        "batch.kubernetes.io/controller-uid": JOB_UID,
                        "batch.kubernetes.io/job-name": name,
                        "controller-uid": JOB_UID,
                        "job-name": name,
                    }
                },
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "containers": [
                        {
                            "name": names.SIMULATOR_CONTAINER,
                            "image": IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {"requests": requests, "limits": limits},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                },
            },
        },
        "status": status,
    }


# --- Node -----------------------------------------------------------------------------


def taint(key: str, effect: str, value: str | None = None, *, added: float | None = None) -> Obj:
    """A node taint."""
    result: Obj = {"key": key, "effect": effect}
    if value is not None:
        result["value"] = value
    if added is not None:
        result["timeAdded"] = ts(added)
    return result


def node(
    name: str = "cpu-standard-1",
    *,
    pool: str = "cpu-standard",
    spot: bool = False,
    labels: Mapping[str, str] | None = None,
    ready: str = "True",
    taints: Sequence[Obj] = (),
    unschedulable: bool = False,
) -> Obj:
    """A node as kubelet and node lifecycle controller show it."""
    node_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "n2-standard-8",
        "topology.kubernetes.io/zone": "europe-west4-a",
        "cloud.google.com/gke-nodepool": pool,
    }
    if spot:
        node_labels["cloud.google.com/gke-spot"] = "true"
    node_labels.update(labels or {})
    ready_cond = {
        "True": condition(
            "Ready", "True", "KubeletReady", "kubelet is posting ready status", when=-7200
        ),
        "False": condition(
            "Ready", "False", "KubeletNotReady", "container runtime network not ready", when=20
        ),
        "Unknown": condition(
            "Ready", "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.", when=20
        ),
    }[ready]
    ready_cond["lastHeartbeatTime"] = ts(19)
    spec: Obj = {"podCIDR": "10.244.1.0/24", "providerID": f"gce://acme-hpc/europe-west4-a/{name}"}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
            "resourceVersion": "47002",
            "creationTimestamp": ts(-86400),
            "labels": node_labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {
                "cpu": "7910m",
                "memory": "29Gi",
                "pods": "110",
                "ephemeral-storage": "95Gi",
            },
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                    when=-7200,
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                    when=-7200,
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                    when=-7200,
                ),
                ready_cond,
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.164.0.12"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.31.4",
                "containerRuntimeVersion": "containerd://1.7.24",
                "osImage": "Container-Optimized OS from Google",
                "architecture": "amd64",
                "operatingSystem": "linux",
            },
        },
    }


# --- container states -------------------------------------------------------------------


def waiting(reason: str = "ContainerCreating", message: str | None = None) -> Obj:
    """A `waiting` container state."""
    state: Obj = {"reason": reason}
    if message:
        state["message"] = message
    return {"waiting": state}


def running(started: float) -> Obj:
    """A `running` container state."""
    return {"running": {"startedAt": ts(started)}}


def terminated(
    exit_code: int,
    *,
    started: float | None,
    finished: float,
    reason: str | None = None,
    message: str | None = None,
) -> Obj:
    """A `terminated` container state; reason defaults to what the kubelet writes."""
    state: Obj = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": ts(started) if started is not None else EPOCH,
        "finishedAt": ts(finished),
        "containerID": CONTAINER_ID,
    }
    if message:
        state["message"] = message
    return {"terminated": state}


# --- Pod --------------------------------------------------------------------------------


def pending_pod(*, unschedulable: str | None = None, created: float = 0.5) -> Obj:
    """A pod the scheduler has not placed (yet)."""
    result = pod(node_name=None, phase="Pending", state=None, created=created)
    if unschedulable:
        result["status"]["conditions"] = [
            condition("PodScheduled", "False", "Unschedulable", unschedulable, when=1, probe=True)
        ]
    return result


def pod(
    *,
    attempt: int = 1,
    node_name: str | None = "cpu-standard-1",
    phase: str = "Running",
    state: Obj | None = None,
    last_state: Obj | None = None,
    scheduled: float = 1.0,
    created: float = 0.5,
    reason: str | None = None,
    message: str | None = None,
    extra_conditions: Sequence[Obj] = (),
    deleted: float | None = None,
    grace: int = 30,
    memory_limit: str = "4Gi",
    suffix: str = "x7k2p",
) -> Obj:
    """A pod of a Job as the kubelet reports it; conditions follow `phase` and `state`."""
    job_name = names.job_name(TASK_NAME, attempt)
    name = f"{job_name}-{suffix}"
    meta: Obj = {
        "name": name,
        "generateName": f"{job_name}-",
        "namespace": NAMESPACE,
        "uid": POD_UID,
        "resourceVersion": "48301",
        "creationTimestamp": ts(created),
        "labels": {
            names.LABEL_TASK_UID: TASK_UID,
            names.LABEL_TASK: TASK_NAME,
            names.LABEL_ATTEMPT: str(attempt),
            "batch.kubernetes.io/controller-uid": JOB_UID,
            "batch.kubernetes.io/job-name": job_name,
            "controller-uid": JOB_UID,
            "job-name": job_name,
        },
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job_name,
                "uid": JOB_UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "finalizers": ["batch.kubernetes.io/job-tracking"],
    }
    if deleted is not None:
        meta["deletionTimestamp"] = ts(deleted + grace)
        meta["deletionGracePeriodSeconds"] = grace
    spec: Obj = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
        "enableServiceLinks": False,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "containers": [
            {
                "name": names.SIMULATOR_CONTAINER,
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "resources": {
                    "requests": {"cpu": "2", "memory": memory_limit},
                    "limits": {"memory": memory_limit},
                },
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
    }
    status: Obj = {"phase": phase, "qosClass": "Burstable"}
    if node_name is not None:
        spec["nodeName"] = node_name
        status.update(
            {
                "hostIP": "10.164.0.12",
                "hostIPs": [{"ip": "10.164.0.12"}],
                "startTime": ts(scheduled),
            }
        )
        if state is None:
            state = waiting()
        kind = next(iter(state))
        is_running = kind == "running"
        if is_running or phase in ("Succeeded", "Failed"):
            status["podIP"] = "10.244.1.17"
            status["podIPs"] = [{"ip": "10.244.1.17"}]
        status["containerStatuses"] = [
            {
                "name": names.SIMULATOR_CONTAINER,
                "image": IMAGE,
                "imageID": IMAGE_ID if kind != "waiting" else "",
                **({"containerID": CONTAINER_ID} if kind != "waiting" else {}),
                "ready": is_running,
                "restartCount": 0,
                "started": is_running,
                "state": state,
                "lastState": last_state or {},
            }
        ]
        status["conditions"] = _pod_conditions(phase, kind, scheduled, state)
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if extra_conditions:
        status.setdefault("conditions", [])
        status["conditions"] = [*extra_conditions, *status["conditions"]]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def disruption_target(reason: str, message: str, *, when: float) -> Obj:
    """The DisruptionTarget condition the control plane or kubelet sets before ending a pod."""
    return condition("DisruptionTarget", "True", reason, message, when=when, probe=True)


def _pod_conditions(phase: str, kind: str, scheduled: float, state: Obj) -> list[Obj]:
    detail = state[kind]
    changed = scheduled
    if kind == "running":
        changed = _seconds(detail["startedAt"])
    elif kind == "terminated":
        changed = _seconds(detail["finishedAt"])
    unready = "containers with unready status: [simulator]"
    ready: tuple[str, str | None, str | None]
    if phase == "Succeeded":
        ready = ("False", "PodCompleted", None)
    elif phase == "Failed":
        ready = ("False", "PodFailed", None)
    elif kind == "running":
        ready = ("True", None, None)
    else:
        ready = ("False", "ContainersNotReady", unready)
    sandbox = (
        "False"
        if phase in ("Succeeded", "Failed")
        or (kind == "waiting" and detail.get("reason") == "ContainerCreating")
        else "True"
    )
    return [
        condition("PodReadyToStartContainers", sandbox, when=changed, probe=True),
        condition(
            "Initialized",
            "True",
            "PodCompleted" if phase == "Succeeded" else None,
            when=scheduled,
            probe=True,
        ),
        condition("Ready", ready[0], ready[1], ready[2], when=changed, probe=True),
        condition("ContainersReady", ready[0], ready[1], ready[2], when=changed, probe=True),
        condition("PodScheduled", "True", when=scheduled, probe=True),
    ]


def _seconds(stamp: str) -> float:
    value = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (value - T0).total_seconds()
