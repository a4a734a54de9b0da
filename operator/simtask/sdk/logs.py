"""The log of an attempt: from its pod while it can be read, from the log the operator kept
(the ConfigMap `<job-name>-log` of SPEC §7) once the pod is gone."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from simtask import names
from simtask.sdk.client import Client, NotFoundError, SimTaskError, api_errors

#: The data key of a kept log.
KEPT_LOG_KEY = "log"
#: The annotation a kept log carries when its start was cut.
TRUNCATED_ANNOTATION = "simtask.dev/log-truncated"


def attempt_record(task: Mapping[str, Any], attempt: int) -> Mapping[str, Any]:
    """The `status.attempts[]` entry of `attempt` ({} when there is none yet)."""
    for record in (task.get("status") or {}).get("attempts") or []:
        if record.get("attempt") == attempt:
            return dict(record)
    return {}


def current_attempt(task: Mapping[str, Any]) -> int:
    """The task's current attempt number (1 before it has a status)."""
    return int((task.get("status") or {}).get("attempt") or 1)


def attempt_job_name(task: Mapping[str, Any], attempt: int) -> str:
    """The Job name of `attempt`: as recorded, else the operator's deterministic name."""
    recorded = attempt_record(task, attempt).get("jobName")
    if recorded:
        return str(recorded)
    status = task.get("status") or {}
    if attempt == current_attempt(task) and status.get("jobName"):
        return str(status["jobName"])
    return names.job_name(str(task["metadata"]["name"]), attempt)


def kept_log_name(task: Mapping[str, Any], attempt: int) -> str:
    """The name of the ConfigMap that keeps `attempt`'s log."""
    return f"{attempt_job_name(task, attempt)}-log"


def tail_lines(text: str, tail: int | None) -> str:
    """The last `tail` lines of `text` (all of it when `tail` is None or negative)."""
    if tail is None or tail < 0:
        return text
    if tail == 0:
        return ""
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail:])


def attempt_pod_name(client: Client, task: Mapping[str, Any], attempt: int) -> str | None:
    """The pod of `attempt`: as recorded in the status, else found by its labels."""
    recorded = attempt_record(task, attempt).get("podName")
    status = task.get("status") or {}
    if not recorded and attempt == current_attempt(task):
        recorded = status.get("podName")
    if recorded:
        return str(recorded)
    meta = task["metadata"]
    selector = f"{names.LABEL_TASK_UID}={meta['uid']},{names.LABEL_ATTEMPT}={attempt}"
    with api_errors(f"listing the pods of attempt {attempt} of simtask/{meta['name']}"):
        pods = client.core.list_namespaced_pod(meta["namespace"], label_selector=selector)
    items = sorted(pods.items, key=lambda p: p.metadata.creation_timestamp)
    return str(items[-1].metadata.name) if items else None


def kept_log(client: Client, task: Mapping[str, Any], attempt: int) -> str | None:
    """The log the operator kept of `attempt`, or None when it kept none."""
    meta = task["metadata"]
    name = kept_log_name(task, attempt)
    try:
        with api_errors(f"reading the kept log configmap/{name}"):
            cm = client.core.read_namespaced_config_map(name, meta["namespace"])
    except NotFoundError:
        return None
    text = str((cm.data or {}).get(KEPT_LOG_KEY) or "")
    if (cm.metadata.annotations or {}).get(TRUNCATED_ANNOTATION) == "true":
        text = "[... the start of this log was not kept ...]\n" + text
    return text


def _pod_log(
    client: Client, namespace: str, pod: str, tail: int | None, follow: bool
) -> Any | None:
    """The pod's log (a stream when `follow`), or None when the pod or its log is gone."""
    kwargs: dict[str, Any] = {"container": names.SIMULATOR_CONTAINER}
    if tail is not None and tail >= 0:
        kwargs["tail_lines"] = tail
    if follow:
        kwargs.update(follow=True, _preload_content=False)
    try:
        return client.core.read_namespaced_pod_log(pod, namespace, **kwargs)
    except ApiException as exc:
        # 404: the pod is gone. 400: its container has not started, or the node that
        # ran it no longer serves its log.
        if exc.status in (400, 404):
            return None
        with api_errors(f"reading the log of pod/{pod}"):
            raise


def read_log(client: Client, task: Mapping[str, Any], attempt: int, tail: int | None) -> str:
    """The log of `attempt`: the pod's while it can be read, else the kept one."""
    namespace = task["metadata"]["namespace"]
    pod = attempt_pod_name(client, task, attempt)
    if pod is not None:
        text = _pod_log(client, namespace, pod, tail, follow=False)
        if text is not None:
            return str(text)
    kept = kept_log(client, task, attempt)
    if kept is not None:
        return tail_lines(kept, tail)
    raise NotFoundError(_no_log(task, attempt, pod))


def _no_log(task: Mapping[str, Any], attempt: int, pod: str | None) -> str:
    name = task["metadata"]["name"]
    if attempt > current_attempt(task):
        return f"simtask/{name} has no attempt {attempt} (it is at attempt {current_attempt(task)})"
    if pod is None:
        return (
            f"attempt {attempt} of simtask/{name} has no pod yet and no kept log "
            f"(phase {(task.get('status') or {}).get('phase') or 'unknown'})"
        )
    return (
        f"attempt {attempt} of simtask/{name}: its pod's log cannot be read and the "
        f"operator kept none (see spec.keepLogs)"
    )


def follow_log(
    client: Client, task: Mapping[str, Any], attempt: int, tail: int | None
) -> Iterator[str]:
    """The lines of `attempt`'s log as the simulator writes them, until it ends."""
    namespace = task["metadata"]["namespace"]
    pod = attempt_pod_name(client, task, attempt)
    stream = None if pod is None else _pod_log(client, namespace, pod, tail, follow=True)
    if stream is None:
        yield from read_log(client, task, attempt, tail).splitlines(keepends=True)
        return
    pending = b""
    try:
        for chunk in stream.stream(amt=65536, decode_content=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace") + "\n"
        if pending:
            yield pending.decode(errors="replace")
    except Exception as exc:  # a connection lost mid-stream, said in words
        raise SimTaskError(f"the log stream of pod/{pod} broke off: {exc}") from None
    finally:
        stream.release_conn()
