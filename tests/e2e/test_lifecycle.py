"""A SimulationTask's lifecycle, one user story per status and operation (SPEC §3)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import condition, eventually, kubectl, kubectl_json
from tests.e2e.conftest import Operator
from tests.e2e.tasks import (
    IMAGE,
    apply,
    get,
    history,
    jobs_of,
    patch_spec,
    pods_of,
    task_manifest,
    wait_phase,
)

pytestmark = pytest.mark.usefixtures("operator")


def test_task_runs_to_success_with_full_status(namespace: str) -> None:
    apply(namespace, task_manifest("cavity", duration="2s"))
    kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "--timeout=90s", "simtask/cavity")
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
    # One Event per transition.
    events = kubectl_json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.kind=SimulationTask,involvedObject.name=cavity",
    )
    assert len(events["items"]) >= 5


def test_nonzero_exit_fails_with_exit_code(namespace: str) -> None:
    apply(namespace, task_manifest("diverged", duration="1s", exit_code=3))
    kubectl("wait", "-n", namespace, "--for=condition=Failed", "--timeout=90s", "simtask/diverged")
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
    eventually(lambda: not jobs_of(namespace, "badimage"), timeout=60, what="Job deleted")


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
    apply(
        namespace,
        task_manifest("licensed", inputs=[{"name": "license", "secret": "solver-license"}]),
    )
    task = wait_phase(namespace, "licensed", "PendingInput")
    assert "Secret 'solver-license' does not exist" in task["status"]["message"]


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
        timeout=60,
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
        lambda: get(namespace, "done")["status"].get("retry") == 1, timeout=30, what="retry seen"
    )
    task = get(namespace, "done")
    assert task["status"]["phase"] == "Success" and task["status"]["attempt"] == 1


def test_time_to_live_exceeded(namespace: str) -> None:
    apply(namespace, task_manifest("slow", duration="10m", timeToLive="2s"))
    task = wait_phase(namespace, "slow", "TTLExceeded")
    assert "ComputationStarted" in history(task)
    assert condition(task, "Failed")["status"] == "True"


def test_ttl_after_finished_deletes_task_and_jobs(namespace: str) -> None:
    apply(namespace, task_manifest("ephemeral", duration="1s", ttlAfterFinished="3s"))
    wait_phase(namespace, "ephemeral", "Success")
    eventually(
        lambda: (
            kubectl("get", "simtask", "ephemeral", "-n", namespace, check=False).returncode != 0
        ),
        timeout=60,
        what="task deleted",
    )
    eventually(lambda: not jobs_of(namespace, "ephemeral"), timeout=60, what="Jobs deleted")


def test_deleting_running_task_leaves_nothing(namespace: str) -> None:
    apply(namespace, task_manifest("doomed", duration="10m"))
    wait_phase(namespace, "doomed", "ComputationStarted")
    kubectl("delete", "simtask", "doomed", "-n", namespace, "--timeout=60s")
    eventually(
        lambda: not jobs_of(namespace, "doomed") and not pods_of(namespace, "doomed"),
        timeout=90,
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


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"command": ["run"]}, "spec.image: Required value"),
        ({"image": IMAGE, "resources": {"cpu": "-1"}}, "cpu"),
        ({"image": IMAGE, "resources": {"memory": "lots"}}, "memory"),
        ({"image": IMAGE, "timeToLive": "forever"}, "timeToLive"),
        ({"image": IMAGE, "ttlAfterFinished": "10 minutes"}, "ttlAfterFinished"),
        ({"image": IMAGE, "gpus": 2}, 'unknown field "spec.gpus"'),
        ({"image": IMAGE, "resources": {"gpu": -1}}, "gpu"),
    ],
)
def test_bad_input_is_rejected_by_the_api_server(
    namespace: str, spec: dict[str, object], expected: str
) -> None:
    manifest = {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationTask",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    proc = kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=json.dumps(manifest), check=False
    )
    assert proc.returncode != 0
    assert expected in proc.stderr


def test_operator_restart_loses_nothing(namespace: str, operator: Operator) -> None:
    for i in range(20):
        apply(namespace, task_manifest(f"batch-{i}", duration=f"{3 + i % 5}s"))
    # Kill the operator while the tasks are in flight, then bring it back.
    eventually(
        lambda: sum(1 for j in kubectl_json("get", "jobs", "-n", namespace)["items"]) >= 5,
        timeout=60,
        what="some Jobs created",
    )
    operator.kill()
    operator.start()
    for i in range(20):
        wait_phase(namespace, f"batch-{i}", "Success", timeout=180)
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


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_follow_the_tasks(namespace: str, operator: Operator) -> None:
    before = operator.metrics()
    apply(namespace, task_manifest("counted", duration="1s"))
    apply(namespace, task_manifest("counted-fail", duration="1s", exit_code=4))
    wait_phase(namespace, "counted", "Success")
    wait_phase(namespace, "counted-fail", "Failed")
    after = operator.metrics()
    to_success = {"from_phase": "ComputationEnded", "to_phase": "Success"}
    assert (
        metric(after, "simtask_transitions_total", **to_success)
        >= metric(before, "simtask_transitions_total", **to_success) + 1
    )
    ended = {"machine_group": "", "outcome": "Failed"}
    assert metric(after, "simtask_run_duration_seconds_count", **ended) >= 1
    assert metric(after, "simtask_queue_wait_seconds_count", machine_group="") >= 2
    assert "simtask_reconcile_duration_seconds_bucket" in after
    assert "# TYPE simtask_tasks gauge" in after
    # No label carries a task's name.
    assert "counted" not in after
