"""The Job of an attempt: names, ownership, placement, environment, resources, volumes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from simtask import names
from simtask.builders import active_deadline_seconds, build_job, job_attempt
from tests.unit.fixtures import IMAGE, NAMESPACE, TASK_NAME, TASK_UID, machine_group, task

SPOT_TOLERATION = {
    "key": "cloud.google.com/gke-spot",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_minimal_job() -> None:
    job = build_job(task(), 1, group=None, previous_attempt_phase=None)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == f"{TASK_NAME}-a1"
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"] == {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "podReplacementPolicy": "Failed",
        "suspend": False,
        "template": job["spec"]["template"],
    }
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    for absent in ("activeDeadlineSeconds", "priorityClassName", "nodeSelector", "tolerations"):
        assert absent not in pod_spec
    assert "volumes" not in pod_spec
    sim = container(job)
    assert sim["name"] == names.SIMULATOR_CONTAINER == "simulator"
    assert sim["image"] == IMAGE
    # A failing simulator's last log lines become its terminated state's message (SPEC §7).
    assert sim["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "command" not in sim and "args" not in sim and "volumeMounts" not in sim
    json.dumps(job)  # plain JSON, ready for the API


def test_labels_annotations_and_owner() -> None:
    job = build_job(task(), 2, group=machine_group("cpu-spot"), previous_attempt_phase=None)
    labels = {
        names.LABEL_TASK_UID: TASK_UID,
        names.LABEL_TASK: TASK_NAME,
        names.LABEL_ATTEMPT: "2",
        names.LABEL_MACHINE_GROUP: "cpu-spot",
    }
    assert job["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"] == {names.ANNOTATION_TASK_NAME: TASK_NAME}
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "simtask.dev/v1alpha1",
            "kind": "SimulationTask",
            "name": TASK_NAME,
            "uid": TASK_UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_long_task_name_is_truncated_and_kept_in_the_annotation() -> None:
    name = "reynolds-sweep-" + "x" * 70 + "-final"
    job = build_job(task(name), 12, group=None, previous_attempt_phase=None)
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["name"].endswith("-a12")
    assert job["metadata"]["name"] == names.job_name(name, 12)
    assert names.LABEL_TASK not in job["metadata"]["labels"]
    assert names.LABEL_TASK not in job["spec"]["template"]["metadata"]["labels"]
    assert job["metadata"]["annotations"][names.ANNOTATION_TASK_NAME] == name
    assert job["metadata"]["ownerReferences"][0]["name"] == name
    assert env(job)[names.ENV_TASK] == name


def test_task_name_of_exactly_63_characters_keeps_its_label() -> None:
    name = "t" * 63
    job = build_job(task(name), 1, group=None, previous_attempt_phase=None)
    assert job["metadata"]["labels"][names.LABEL_TASK] == name
    assert len(job["metadata"]["name"]) <= 63


def test_job_attempt_round_trip() -> None:
    for attempt in (1, 7, 42):
        assert (
            job_attempt(build_job(task(), attempt, group=None, previous_attempt_phase=None))
            == attempt
        )
    assert job_attempt({"metadata": {"labels": {}}}) is None
    assert job_attempt({"metadata": {}}) is None
    assert job_attempt({"metadata": {"labels": {names.LABEL_ATTEMPT: "two"}}}) is None
    assert job_attempt({"metadata": {"labels": {names.LABEL_ATTEMPT: "0"}}}) is None


def test_suspend() -> None:
    job = build_job(task(), 1, group=None, previous_attempt_phase=None, suspend=True)
    assert job["spec"]["suspend"] is True


def test_pod_template_labels_merge_and_ours_win() -> None:
    the_task = task(
        podTemplate={
            "metadata": {
                "labels": {"team": "aero", names.LABEL_ATTEMPT: "99", names.LABEL_TASK_UID: "fake"},
                "annotations": {"prometheus.io/scrape": "true"},
            }
        }
    )
    job = build_job(the_task, 3, group=None, previous_attempt_phase=None)
    meta = job["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "aero"
    assert meta["labels"][names.LABEL_ATTEMPT] == "3"
    assert meta["labels"][names.LABEL_TASK_UID] == TASK_UID
    assert meta["annotations"] == {"prometheus.io/scrape": "true"}
    # The Job's own labels are ours only.
    assert "team" not in job["metadata"]["labels"]


def test_environment() -> None:
    the_task = task(
        env=[
            {"name": "OMP_NUM_THREADS", "value": "8"},
            {"name": "LICENSE", "valueFrom": {"secretKeyRef": {"name": "lic", "key": "server"}}},
            {"name": names.ENV_ATTEMPT, "value": "spoofed"},
        ]
    )
    job = build_job(the_task, 2, group=None, previous_attempt_phase="SpotPreempted")
    variables = container(job)["env"]
    assert [e["name"] for e in variables] == [
        "OMP_NUM_THREADS",
        "LICENSE",
        names.ENV_TASK,
        names.ENV_ATTEMPT,
        names.ENV_PREVIOUS_ATTEMPT_PHASE,
    ]
    assert env(job) == {
        "OMP_NUM_THREADS": "8",
        "LICENSE": {"secretKeyRef": {"name": "lic", "key": "server"}},
        "SIMTASK_TASK": TASK_NAME,
        "SIMTASK_ATTEMPT": "2",
        "SIMTASK_PREVIOUS_ATTEMPT_PHASE": "SpotPreempted",
    }


def test_first_attempt_has_empty_previous_phase() -> None:
    job = build_job(task(), 1, group=None, previous_attempt_phase=None)
    assert env(job)["SIMTASK_PREVIOUS_ATTEMPT_PHASE"] == ""


def test_command_args_working_dir() -> None:
    the_task = task(
        command=["mpirun", "-np", "8"], args=["simpleFoam", "-parallel"], workingDir="/case"
    )
    sim = container(build_job(the_task, 1, group=None, previous_attempt_phase=None))
    assert sim["command"] == ["mpirun", "-np", "8"]
    assert sim["args"] == ["simpleFoam", "-parallel"]
    assert sim["workingDir"] == "/case"


def test_resources_cpu_memory_storage() -> None:
    the_task = task(resources={"cpu": "3500m", "memory": "12Gi", "ephemeralStorage": "20Gi"})
    sim = container(build_job(the_task, 1, group=None, previous_attempt_phase=None))
    assert sim["resources"] == {
        "requests": {"cpu": "3500m", "memory": "12Gi", "ephemeral-storage": "20Gi"},
        "limits": {"memory": "12Gi"},
    }


def test_gpu_request_equals_limit() -> None:
    the_task = task(resources={"cpu": "8", "memory": "64Gi", "gpu": 2})
    sim = container(build_job(the_task, 1, group=None, previous_attempt_phase=None))
    assert sim["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert sim["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "2"}


def test_zero_gpu_is_no_gpu() -> None:
    sim = container(
        build_job(
            task(resources={"cpu": "1", "gpu": 0}), 1, group=None, previous_attempt_phase=None
        )
    )
    assert "nvidia.com/gpu" not in json.dumps(sim)
    assert "limits" not in sim["resources"]


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("90s", 90), ("1h30m", 5400), ("500ms", 1), ("2d", 172800), ("1.5s", 2)]
)
def test_time_to_live_becomes_active_deadline(ttl: str, seconds: int) -> None:
    job = build_job(task(timeToLive=ttl), 1, group=None, previous_attempt_phase=None)
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == seconds
    assert active_deadline_seconds(ttl) == seconds


def test_bad_time_to_live_is_refused() -> None:
    with pytest.raises(ValueError):
        build_job(task(timeToLive="forever"), 1, group=None, previous_attempt_phase=None)


def test_priority_class() -> None:
    job = build_job(task(priorityClassName="batch-low"), 1, group=None, previous_attempt_phase=None)
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "batch-low"


def test_placement_merges_group_and_task() -> None:
    group = machine_group(
        "gpu-a100",
        node_selector={"cloud.google.com/gke-nodepool": "gpu-a100"},
        tolerations=[GPU_TOLERATION],
    )
    the_task = task(
        nodeSelector={
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
            "cloud.google.com/gke-nodepool": "cpu-standard",
        },
        tolerations=[dict(GPU_TOLERATION), SPOT_TOLERATION],
    )
    pod_spec = build_job(the_task, 1, group=group, previous_attempt_phase=None)["spec"]["template"][
        "spec"
    ]
    assert pod_spec["nodeSelector"] == {
        # The group decides which nodes are its own.
        "cloud.google.com/gke-nodepool": "gpu-a100",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
    }
    assert pod_spec["tolerations"] == [GPU_TOLERATION, SPOT_TOLERATION]


def test_group_only_placement() -> None:
    group = machine_group("cpu-spot", tolerations=[SPOT_TOLERATION])
    job = build_job(task(), 1, group=group, previous_attempt_phase=None)
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"cloud.google.com/gke-nodepool": "cpu-spot"}
    assert pod_spec["tolerations"] == [SPOT_TOLERATION]
    assert job["metadata"]["labels"][names.LABEL_MACHINE_GROUP] == "cpu-spot"


_CRD_INPUTS = {
    "inputs": [
        {"name": "mesh", "persistentVolumeClaim": "wing-mesh"},
        {"name": "config", "configMap": "solver-settings"},
        {"name": "license", "secret": "ansys-license"},
    ],
    "outputs": {"persistentVolumeClaim": "wing-results"},
}
_SOURCE_INPUTS = {
    "inputs": [
        {"name": "mesh", "persistentVolumeClaim": {"claimName": "wing-mesh"}},
        {"name": "config", "configMap": {"name": "solver-settings"}},
        {"name": "license", "secret": {"name": "ansys-license"}},
    ],
    "outputs": {"persistentVolumeClaim": {"claimName": "wing-results"}},
}


@pytest.mark.parametrize("spec", [_CRD_INPUTS, _SOURCE_INPUTS], ids=["crd-form", "volume-form"])
def test_inputs_and_outputs(spec: dict[str, Any]) -> None:
    the_task = task(**copy.deepcopy(spec))
    job = build_job(the_task, 1, group=None, previous_attempt_phase=None)
    assert job["spec"]["template"]["spec"]["volumes"] == [
        {
            "name": "input-mesh",
            "persistentVolumeClaim": {"claimName": "wing-mesh", "readOnly": True},
        },
        {"name": "input-config", "configMap": {"name": "solver-settings"}},
        {"name": "input-license", "secret": {"secretName": "ansys-license"}},
        {"name": "outputs", "persistentVolumeClaim": {"claimName": "wing-results"}},
    ]
    assert container(job)["volumeMounts"] == [
        {"name": "input-mesh", "mountPath": "/inputs/mesh", "readOnly": True},
        {"name": "input-config", "mountPath": "/inputs/config", "readOnly": True},
        {"name": "input-license", "mountPath": "/inputs/license", "readOnly": True},
        {"name": "outputs", "mountPath": "/outputs"},
    ]


def test_input_without_a_source_is_refused() -> None:
    with pytest.raises(ValueError, match="'mesh'"):
        build_job(task(inputs=[{"name": "mesh"}]), 1, group=None, previous_attempt_phase=None)


def test_builder_does_not_touch_its_arguments() -> None:
    the_task = task(
        env=[{"name": "A", "value": "1"}],
        tolerations=[SPOT_TOLERATION],
        inputs=[{"name": "config", "configMap": {"name": "solver-settings", "items": []}}],
        podTemplate={"metadata": {"labels": {"team": "aero"}}},
    )
    group = machine_group("cpu-spot", tolerations=[SPOT_TOLERATION])
    before = copy.deepcopy((the_task, group))
    job = build_job(the_task, 1, group=group, previous_attempt_phase=None)
    job["spec"]["template"]["spec"]["tolerations"][0]["value"] = "changed"
    job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "changed"
    container(job)["env"][0]["value"] = "changed"
    assert (the_task, group) == before


def test_same_input_same_job() -> None:
    args = (task(resources={"cpu": "2"}), 4)
    first = build_job(*args, group=machine_group(), previous_attempt_phase="Failed")
    second = build_job(*args, group=machine_group(), previous_attempt_phase="Failed")
    assert first == second
