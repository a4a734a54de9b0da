"""A SimulationTask's lifecycle, one user story per status and operation (SPEC §3)."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import Timeout, condition, eventually, kubectl, kubectl_json
from tests.e2e.conftest import Operator, release_args
from tests.e2e.tasks import (
    HEADROOM,
    IMAGE,
    apply,
    entry,
    get,
    history,
    jobs_of,
    parse_time,
    patch_spec,
    pods_of,
    task_manifest,
    wait_phase,
)

pytestmark = pytest.mark.usefixtures("operator")


def test_task_runs_to_success_with_full_status(namespace: str) -> None:
    apply(namespace, task_manifest("cavity", duration="2s"))
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Succeeded",
        f"--timeout={3 * HEADROOM:.0f}s",
        "simtask/cavity",
    )
    task = get(namespace, "cavity")
    status = task["status"]
    assert history(task) == [
        "Submitted",
        "Started",
        "ComputationStarted",
        "ComputationEnded",
        "Success",
    ]
    assert status["phase"] == "Success" and status["attempt"] == 1 and status["exitCode"] == 0
    assert status["jobName"] == "cavity-a1" and status["podName"].startswith("cavity-a1-")
    assert status["nodeName"].startswith("cpu-standard-")
    times = [datetime.fromisoformat(h["time"].replace("Z", "+00:00")) for h in status["history"]]
    assert times == sorted(times)
    assert status["startTime"] <= status["completionTime"]
    assert condition(task, "Ready")["status"] == "True"
    assert condition(task, "Failed")["status"] == "False"
    assert status["observedGeneration"] == task["metadata"]["generation"]
    assert status["attempts"][0]["phase"] == "Success" and status["attempts"][0]["cpuSeconds"] > 0
    assert len(jobs_of(namespace, "cavity")) == 1
    # kubectl get shows the lifecycle; short names work.
    out = kubectl("get", "st", "-n", namespace).stdout
    assert "PHASE" in out and "Success" in out
    # An Event where the user learns something: how it ended. The steps of every run are in
    # status.history (and the pod's own events), not repeated as Events of the task.
    events = kubectl_json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.kind=SimulationTask,involvedObject.name=cavity",
    )
    assert [(e["type"], e["reason"]) for e in events["items"]] == [("Normal", "Succeeded")]


def test_nonzero_exit_fails_with_exit_code(namespace: str) -> None:
    apply(namespace, task_manifest("diverged", duration="1s", exit_code=3))
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Failed",
        f"--timeout={3 * HEADROOM:.0f}s",
        "simtask/diverged",
    )
    task = get(namespace, "diverged")
    assert task["status"]["phase"] == "Failed"
    assert task["status"]["exitCode"] == 3
    assert "3" in task["status"]["message"]
    assert history(task)[-1] == "Failed" and "ComputationStarted" in history(task)
    assert condition(task, "Succeeded")["status"] == "False"


def test_oom_killed_simulator_fails_saying_so(namespace: str) -> None:
    apply(
        namespace,
        task_manifest(
            "oom",
            duration="1s",
            exit_code=137,
            annotations={"testbed.simtask.dev/termination-reason": "OOMKilled"},
        ),
    )
    task = wait_phase(namespace, "oom", "Failed")
    assert task["status"]["reason"] == "OOMKilled"
    assert "memory" in task["status"]["message"].lower()


def test_image_that_cannot_be_pulled_fails_naming_the_image(namespace: str) -> None:
    apply(
        namespace, task_manifest("badimage", annotations={"testbed.simtask.dev/image-pull": "fail"})
    )
    task = wait_phase(namespace, "badimage", "Failed")
    assert task["status"]["reason"] == "ImagePullFailed"
    assert IMAGE in task["status"]["message"]
    # The Job would wait forever; the operator removes it.
    eventually(lambda: not jobs_of(namespace, "badimage"), timeout=2 * HEADROOM, what="Job deleted")


def test_task_waits_for_missing_input_then_runs(namespace: str) -> None:
    apply(
        namespace, task_manifest("with-mesh", inputs=[{"name": "mesh", "configMap": "cavity-mesh"}])
    )
    task = wait_phase(namespace, "with-mesh", "PendingInput")
    assert "cavity-mesh" in task["status"]["message"] and "ConfigMap" in task["status"]["message"]
    assert not jobs_of(namespace, "with-mesh")
    kubectl(
        "create",
        "configmap",
        "cavity-mesh",
        "-n",
        namespace,
        "--from-literal=blockMeshDict=cells 20",
    )
    task = wait_phase(namespace, "with-mesh", "Success")
    assert history(task)[:2] == ["PendingInput", "Submitted"]
    job = jobs_of(namespace, "with-mesh")[0]
    mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "input-mesh", "mountPath": "/inputs/mesh", "readOnly": True}.items() <= mounts[
        0
    ].items()


def test_missing_secret_says_what_to_create(namespace: str) -> None:
    """Installed cluster-wide, the operator may not read Secrets (the chart's default): the
    task starts, the kubelet cannot mount the Secret, and the task says which one to make."""
    assert "--no-check-secret-inputs" in release_args(), "the chart's default changed"
    apply(
        namespace,
        task_manifest("licensed", inputs=[{"name": "license", "secret": "solver-license"}]),
    )
    task = eventually(
        lambda: (
            (t := get(namespace, "licensed")).get("status", {}).get("reason") == "InputMissing"
            and t
        ),
        timeout=HEADROOM * 2,
        what="the task to say its Secret input is missing",
    )
    assert task["status"]["phase"] == "Started"
    assert task["status"]["message"] == (
        "input 'license': Secret 'solver-license' does not exist in namespace "
        f"'{namespace}' (the kubelet cannot mount it)"
    )
    kubectl("create", "secret", "generic", "solver-license", "-n", namespace, "--from-literal=k=v")
    task = wait_phase(namespace, "licensed", "Success", within=HEADROOM)
    assert history(task)[:3] == ["Submitted", "Started", "ComputationStarted"]


def test_hold_and_release(namespace: str) -> None:
    apply(namespace, task_manifest("held", hold=True))
    task = wait_phase(namespace, "held", "Held")
    assert not jobs_of(namespace, "held")
    assert task["status"]["reason"] == "HeldByUser"
    patch_spec(namespace, "held", {"hold": False})
    task = wait_phase(namespace, "held", "Success")
    assert history(task)[:2] == ["Held", "Submitted"]


def test_kill_running_task(namespace: str) -> None:
    apply(namespace, task_manifest("long", duration="10m"))
    wait_phase(namespace, "long", "ComputationStarted")
    patch_spec(namespace, "long", {"kill": True})
    task = wait_phase(namespace, "long", "Killed")
    assert history(task)[-2:] == ["PendingKilled", "Killed"]
    assert condition(task, "Failed")["status"] == "True"
    eventually(
        lambda: not pods_of(namespace, "long") and not jobs_of(namespace, "long"),
        timeout=2 * HEADROOM,
        what="pods and Job gone",
    )


def test_kill_before_start(namespace: str) -> None:
    apply(namespace, task_manifest("queued", hold=True))
    wait_phase(namespace, "queued", "Held")
    patch_spec(namespace, "queued", {"kill": True})
    task = wait_phase(namespace, "queued", "Killed")
    assert history(task) == ["Held", "PendingKilled", "Killed"]


def test_retry_runs_a_new_attempt(namespace: str) -> None:
    apply(namespace, task_manifest("flaky", duration="1s", exit_code=2))
    wait_phase(namespace, "flaky", "Failed")
    # The user fixes the cause and asks for a retry.
    patch_spec(
        namespace,
        "flaky",
        {
            "retry": 1,
            "podTemplate": {
                "metadata": {
                    "annotations": {
                        "testbed.simtask.dev/duration": "1s",
                        "testbed.simtask.dev/exit-code": "0",
                    }
                }
            },
        },
    )
    task = wait_phase(namespace, "flaky", "Success")
    assert task["status"]["attempt"] == 2
    assert history(task).count("Submitted") == 2
    assert [h["attempt"] for h in task["status"]["history"]][-1] == 2
    assert sorted(j["metadata"]["name"] for j in jobs_of(namespace, "flaky")) == [
        "flaky-a1",
        "flaky-a2",
    ]
    env = {
        e["name"]: e.get("value")
        for e in jobs_of(namespace, "flaky")[1]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SIMTASK_ATTEMPT"] == "2" and env["SIMTASK_PREVIOUS_ATTEMPT_PHASE"] == "Failed"


def test_retry_does_not_rerun_success(namespace: str) -> None:
    apply(namespace, task_manifest("done", duration="1s"))
    wait_phase(namespace, "done", "Success")
    patch_spec(namespace, "done", {"retry": 1})
    eventually(
        lambda: get(namespace, "done")["status"].get("retry") == 1,
        timeout=HEADROOM,
        what="retry seen",
    )
    task = get(namespace, "done")
    assert task["status"]["phase"] == "Success" and task["status"]["attempt"] == 1


def test_time_to_live_exceeded(namespace: str) -> None:
    apply(namespace, task_manifest("slow", duration="10m", timeToLive="2s"))
    task = wait_phase(namespace, "slow", "TTLExceeded", within=6)
    assert "ComputationStarted" in history(task)
    assert condition(task, "Failed")["status"] == "True"
    # On time: 2 s of compute after the pod started (timestamps are to the second).
    ran = parse_time(entry(task, "TTLExceeded")["time"]) - parse_time(
        entry(task, "Started")["time"]
    )
    assert 1 <= ran.total_seconds() <= 4, f"timeToLive 2s ended the task after {ran}"


def test_ttl_after_finished_deletes_task_and_jobs(namespace: str) -> None:
    apply(namespace, task_manifest("ephemeral", duration="1s", ttlAfterFinished="3s"))
    task = wait_phase(namespace, "ephemeral", "Success")
    done = parse_time(task["status"]["completionTime"])
    while kubectl("get", "simtask", "ephemeral", "-n", namespace, check=False).returncode == 0:
        # Not early: the task is there until 3 s after it finished (to the second).
        assert datetime.now(UTC) < done + timedelta(seconds=3 + HEADROOM), "deleted too late"
        time.sleep(0.2)
    gone = datetime.now(UTC)
    assert gone >= done + timedelta(seconds=2), f"deleted {gone - done} after it finished"
    eventually(lambda: not jobs_of(namespace, "ephemeral"), timeout=HEADROOM, what="Jobs deleted")


def test_deleting_running_task_leaves_nothing(namespace: str) -> None:
    apply(namespace, task_manifest("doomed", duration="10m"))
    wait_phase(namespace, "doomed", "ComputationStarted")
    kubectl("delete", "simtask", "doomed", "-n", namespace, f"--timeout={2 * HEADROOM:.0f}s")
    eventually(
        lambda: not jobs_of(namespace, "doomed") and not pods_of(namespace, "doomed"),
        timeout=3 * HEADROOM,
        what="Jobs and pods gone",
    )


def test_node_pressure_eviction_is_executor_failed(namespace: str) -> None:
    apply(namespace, task_manifest("evicted", duration="10m"))
    task = wait_phase(namespace, "evicted", "ComputationStarted")
    pod = task["status"]["podName"]
    # What the kubelet writes when it evicts a pod for memory pressure.
    kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "Failed",
                    "reason": "Evicted",
                    "message": "The node was low on resource: memory.",
                    "containerStatuses": [
                        {
                            "name": "simulator",
                            "image": IMAGE,
                            "ready": False,
                            "restartCount": 0,
                            "imageID": "",
                            "state": {
                                "terminated": {
                                    "exitCode": 137,
                                    "reason": "Error",
                                    "startedAt": "2026-01-01T00:00:00Z",
                                    "finishedAt": "2026-01-01T00:00:01Z",
                                }
                            },
                        }
                    ],
                }
            }
        ),
    )
    task = wait_phase(namespace, "evicted", "ExecutorFailed")
    assert "memory" in task["status"]["message"]


def test_operator_restart_loses_nothing(namespace: str, operator: Operator) -> None:
    for i in range(20):
        apply(namespace, task_manifest(f"batch-{i}", duration=f"{3 + i % 5}s"))
    # Kill the operator while the tasks are in flight, then bring it back.
    eventually(
        lambda: sum(1 for j in kubectl_json("get", "jobs", "-n", namespace)["items"]) >= 5,
        timeout=2 * HEADROOM,
        what="some Jobs created",
    )
    operator.kill()
    operator.start()
    for i in range(20):
        wait_phase(namespace, f"batch-{i}", "Success", timeout=6 * HEADROOM)
    jobs = kubectl_json("get", "jobs", "-n", namespace)["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(f"batch-{i}-a1" for i in range(20))
    for i in range(20):
        task = get(namespace, f"batch-{i}")
        assert history(task) == [
            "Submitted",
            "Started",
            "ComputationStarted",
            "ComputationEnded",
            "Success",
        ]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(values: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a labelled child not yet observed)."""
    return values.get((name, frozenset(labels.items())), 0.0)


def by_label(values: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    """The non-zero samples of `name` that carry `labels`, by the value of `label`."""
    found: dict[str, float] = {}
    for (sample, pairs), number in values.items():
        have = dict(pairs)
        if sample == name and number and labels.items() <= have.items():
            found[have[label]] = found.get(have[label], 0.0) + number
    return found


@pytest.fixture
def own_group() -> Iterator[str]:
    """A MachineGroup of the test's own, on the cpu-standard pool: samples labelled with it
    count only this test's tasks, whatever else the shared operator does meanwhile."""
    name = f"metrics-{uuid.uuid4().hex[:6]}"
    group = {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "MachineGroup",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"cloud.google.com/gke-nodepool": "cpu-standard"}},
    }
    kubectl("apply", "-f", "-", input_text=json.dumps(group))
    eventually(
        lambda: kubectl_json("get", "machinegroup", name).get("status", {}).get("phase"),
        timeout=HEADROOM,
        what=f"{name} status",
    )
    yield name
    kubectl("delete", "machinegroup", name, "--ignore-not-found", "--wait=false", check=False)


def test_metrics_follow_the_tasks(namespace: str, operator: Operator, own_group: str) -> None:
    before = samples(operator.metrics())
    started = time.monotonic()
    apply(namespace, task_manifest("counted", duration="2s", machineGroup=own_group))
    apply(
        namespace,
        task_manifest("counted-fail", duration="1s", exit_code=4, machineGroup=own_group),
    )
    tasks = [
        wait_phase(namespace, "counted", "Success"),
        wait_phase(namespace, "counted-fail", "Failed"),
    ]
    text = operator.metrics()
    after = samples(text)
    elapsed = time.monotonic() - started

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The histograms labelled with the test's own group: exactly one observation per
    # attempt started and per attempt ended, by how it ended.
    group = {"machine_group": own_group}
    assert delta("simtask_queue_wait_seconds_count", **group) == 2
    assert 0 <= delta("simtask_queue_wait_seconds_sum", **group) <= elapsed + 1
    runs = Counter(by_label(after, "simtask_run_duration_seconds_count", "outcome", **group))
    runs.subtract(by_label(before, "simtask_run_duration_seconds_count", "outcome", **group))
    assert +runs == {"Success": 1, "Failed": 1}
    # Each run lasted as long as its simulator (timestamps have 1 s resolution), and no
    # longer than the test.
    ran = delta("simtask_run_duration_seconds_sum", **group, outcome="Success")
    assert 2 <= ran <= elapsed + 1, ran
    failed = delta("simtask_run_duration_seconds_sum", **group, outcome="Failed")
    assert 1 <= failed <= elapsed + 1, failed
    # Transitions: at least every move in the two histories (the shared operator may be
    # moving tasks of earlier tests at the same time, so not exactly).
    moves = Counter(pair for task in tasks for pair in itertools.pairwise(["", *history(task)]))
    assert moves[("ComputationEnded", "Success")] == 1 and moves[("", "Submitted")] == 2
    for (source, target), count in moves.items():
        moved = delta("simtask_transitions_total", from_phase=source, to_phase=target)
        assert moved >= count, f"{source} -> {target}: {moved} counted, {count} made"
    assert delta("simtask_reconcile_duration_seconds_count") >= 2
    # The gauge of tasks by phase shows the two tasks of the group, in their phases.
    gauge: list[dict[str, float]] = []

    def tasks_by_phase() -> bool:
        gauge.append(by_label(samples(operator.metrics()), "simtask_tasks", "phase", **group))
        return gauge[-1] == {"Success": 1, "Failed": 1}

    try:
        eventually(tasks_by_phase, timeout=HEADROOM, what=f"simtask_tasks of {own_group}")
    except Timeout:
        raise AssertionError(f"simtask_tasks of {own_group} by phase: {gauge[-1]}") from None
    assert "# TYPE simtask_tasks gauge" in text
    # No label carries a task's name.
    assert "counted" not in text
