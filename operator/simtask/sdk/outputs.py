"""Copy a task's outputs out of its claim: a short-lived, read-only reader pod mounts the
claim, `tar` runs in it through the API server's exec, and the archive is unpacked here as
it streams. The pod is deleted whatever happens; if this process dies first, the pod ends
by itself (`activeDeadlineSeconds`) and goes with the task (ownerReference)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream as ws_stream
from kubernetes.stream.ws_client import ERROR_CHANNEL

from simtask import API_VERSION, names
from simtask.sdk.client import Client, SimTaskError, api_errors

#: The reader's image: anything with `sleep` and `tar`. Override with SIMTASK_READER_IMAGE.
DEFAULT_READER_IMAGE = "busybox:1.36"
READER_CONTAINER = "reader"
#: How long a reader pod may live at most (it is deleted as soon as the copy ends).
READER_LIFETIME_SECONDS = 3600
#: Labels that mark reader pods; they never carry the task-uid label the operator selects on.
READER_LABELS = {
    "app.kubernetes.io/name": "simtask-outputs-reader",
    "app.kubernetes.io/managed-by": "kubectl-simtask",
}
#: On a reader pod: the task whose outputs it reads.
OUTPUTS_OF_ANNOTATION = "simtask.dev/outputs-of"
#: The local cluster's simulated nodes keep a pod running this long; real nodes ignore it.
TESTBED_DURATION_ANNOTATION = "testbed.simtask.dev/duration"


def outputs_claim(task: Mapping[str, Any]) -> str:
    """The claim of `spec.outputs`; SimTaskError when the task has none."""
    claim = ((task.get("spec") or {}).get("outputs") or {}).get("persistentVolumeClaim")
    if not claim:
        raise SimTaskError(f"simtask/{task['metadata']['name']} has no spec.outputs")
    return str(claim)


def reader_pod(
    task: Mapping[str, Any],
    claim: str,
    *,
    image: str = DEFAULT_READER_IMAGE,
    lifetime: int = READER_LIFETIME_SECONDS,
) -> dict[str, Any]:
    """The reader pod for `task`'s claim: read-only mount, restricted security, no network
    use, on the task's node while the task runs there (a ReadWriteOnce claim is attached
    to one node at a time)."""
    meta = task["metadata"]
    status = task.get("status") or {}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": lifetime,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 0,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
        "containers": [
            {
                "name": READER_CONTAINER,
                "image": image,
                "command": ["sleep", str(lifetime)],
                "workingDir": names.OUTPUTS_DIR,
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"memory": "128Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "outputs", "mountPath": names.OUTPUTS_DIR, "readOnly": True}
                ],
            }
        ],
        "volumes": [
            {"name": "outputs", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        ],
    }
    node = status.get("nodeName")
    if node and status.get("phase") in ("Started", "ComputationStarted", "ComputationEnded"):
        on_node = {"key": "metadata.name", "operator": "In", "values": [node]}
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [on_node]}]
                }
            }
        }
    prefix = str(meta["name"])[:40].rstrip("-.")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{prefix}-outputs-",
            "namespace": meta["namespace"],
            "labels": dict(READER_LABELS),
            "annotations": {
                OUTPUTS_OF_ANNOTATION: str(meta["name"]),
                TESTBED_DURATION_ANNOTATION: f"{lifetime}s",
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "SimulationTask",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": spec,
    }


def _pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a reader pod will not run, if it shows why."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"it ended ({status.get('phase')}: {status.get('reason') or 'no reason'})"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
            return f"its image cannot be pulled: {waiting.get('message') or waiting['reason']}"
    return None


def _pending_reason(pod: Mapping[str, Any]) -> str:
    """Why a reader pod has not started yet (an autoscaler may still add a node for it)."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"not scheduled: {cond.get('message') or cond.get('reason')}"
    return f"phase {(pod.get('status') or {}).get('phase') or 'Pending'}"


def _running(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and all(
        "running" in (cs.get("state") or {}) for cs in status.get("containerStatuses") or [{}]
    )


class _ExecReader(io.RawIOBase):
    """The stdout of an exec session as a binary file, for tarfile's streaming mode."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._buffer = b""
        self.stderr = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer and self._session.is_open():
            self._session.update(timeout=1)
            if self._session.peek_stdout():
                self._buffer += self._session.read_stdout()
            if self._session.peek_stderr():
                self.stderr += self._session.read_stderr()
        if not self._buffer and self._session.peek_stdout():
            self._buffer = self._session.read_stdout()
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def download_outputs(
    client: Client,
    task: Mapping[str, Any],
    directory: str | os.PathLike[str],
    *,
    image: str | None = None,
    start_timeout: float = 300,
) -> Path:
    """Copy `task`'s /outputs into `directory` (created if needed); return its path."""
    claim = outputs_claim(task)
    namespace = task["metadata"]["namespace"]
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    image = image or os.environ.get("SIMTASK_READER_IMAGE") or DEFAULT_READER_IMAGE
    body = reader_pod(task, claim, image=image)
    with api_errors(f"creating a reader pod for claim {claim} in namespace {namespace}"):
        created = client.core.create_namespaced_pod(namespace, body)
    pod = str(created.metadata.name)
    try:
        _wait_pod(client, namespace, pod, time.monotonic() + start_timeout)
        _copy(client, namespace, pod, target)
    finally:
        _delete_pod(client, namespace, pod)
    return target


def _wait_pod(client: Client, namespace: str, pod: str, deadline: float) -> None:
    """Wait until the reader runs; SimTaskError when it cannot, or not before `deadline`."""
    last = "not seen yet"
    with api_errors(f"watching reader pod/{pod}"):
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SimTaskError(f"reader pod/{pod} did not start in time ({last})")
            w = watch.Watch()
            for event in w.stream(
                client.core.list_namespaced_pod,
                namespace,
                field_selector=f"metadata.name={pod}",
                timeout_seconds=max(1, int(min(remaining, 60))),
            ):
                if not event:  # a blank line of the stream
                    continue
                obj = client.api.sanitize_for_serialization(event["object"])
                if event["type"] == "DELETED":
                    raise SimTaskError(f"reader pod/{pod} was deleted before it ran")
                if _running(obj):
                    w.stop()
                    return
                last = _pending_reason(obj)
                problem = _pod_problem(obj)
                if problem is not None:
                    w.stop()
                    raise SimTaskError(f"reader pod/{pod}: {problem}")


def exec_status(text: str) -> tuple[int, str]:
    """The exit code and message of an exec session, from its error channel (a Status
    object); an empty channel means the command exited 0."""
    if not text.strip():
        return 0, ""
    try:
        status = json.loads(text)
    except ValueError:
        return 1, text.strip()
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message") or 1), str(status.get("message") or "")
    return 1, str(status.get("message") or text.strip())


def _copy(client: Client, namespace: str, pod: str, target: Path) -> None:
    with api_errors(f"running tar in reader pod/{pod}"):
        session = ws_stream(
            client.core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            container=READER_CONTAINER,
            command=["tar", "-cf", "-", "-C", names.OUTPUTS_DIR, "."],
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            binary=True,
            _preload_content=False,
        )
    reader = _ExecReader(session)
    failure: str | None = None
    try:
        try:
            with tarfile.open(fileobj=io.BufferedReader(reader), mode="r|") as archive:
                archive.extractall(target, filter="data")
        except tarfile.TarError as exc:
            failure = str(exc)
        while session.is_open():  # to the end, for the exit status
            session.update(timeout=1)
            if session.peek_stderr():
                reader.stderr += session.read_stderr()
        raw = session.read_channel(ERROR_CHANNEL)
        code, message = exec_status(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
    finally:
        session.close()
    said = reader.stderr.decode(errors="replace").strip()
    if code != 0 or failure is not None:
        details = "; ".join(part for part in (message, said and f"tar said: {said}") if part)
        raise SimTaskError(
            f"copying from reader pod/{pod} failed"
            + (f" (exit code {code})" if code else "")
            + (f": {failure}" if failure else "")
            + (f"; {details}" if details else "")
        )


def _delete_pod(client: Client, namespace: str, pod: str) -> None:
    try:
        client.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise
