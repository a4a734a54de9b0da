"""The API models: defaults, wire names, what they refuse, and the shipped examples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from simtask import API_VERSION
from simtask.api import (
    AttemptRecord,
    Condition,
    MachineGroupPhase,
    MachineGroupSpec,
    SimulationTaskSpec,
    TaskInput,
    parse_machine_group_spec,
    parse_machine_group_status,
    parse_task_spec,
    parse_task_status,
)
from simtask.lifecycle import Phase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec(**fields: Any) -> SimulationTaskSpec:
    return parse_task_spec({"image": "busybox", **fields})


# --- SimulationTaskSpec -----------------------------------------------------------------


def test_defaults_are_the_crd_defaults() -> None:
    task = spec()
    assert task.resubmit_on_preemption is True
    assert task.max_resubmissions == 3
    assert task.fallback_after_preemptions == 2
    assert (task.hold, task.kill, task.retry) == (False, False, 0)
    assert task.machine_group is None
    assert task.inputs is None
    assert task.time_to_live_seconds() is None
    assert task.ttl_after_finished_seconds() is None


def test_camel_case_on_the_wire_and_snake_case_in_python() -> None:
    task = spec(
        workingDir="/work",
        timeToLive="1h30m",
        ttlAfterFinished="0s",
        machineGroup="gpu-a100",
        fallbackMachineGroup="cpu-standard",
        resources={"cpu": "500m", "memory": 4096, "ephemeralStorage": "1Gi", "gpu": 2},
        inputs=[{"name": "mesh", "persistentVolumeClaim": "mesh-pvc"}],
        podTemplate={"metadata": {"annotations": {"a": "b"}}},
        env=[{"name": "OMP_NUM_THREADS", "value": "4"}],
        priorityClassName="batch-low",
    )
    assert task.working_dir == "/work"
    assert task.resources is not None
    assert task.resources.ephemeral_storage == "1Gi"
    assert task.resources.memory == 4096
    assert task.time_to_live_seconds() == 5400.0
    assert task.ttl_after_finished_seconds() == 0.0
    wire = task.to_dict()
    assert wire["timeToLive"] == "1h30m"
    assert wire["fallbackMachineGroup"] == "cpu-standard"
    assert wire["inputs"] == [{"name": "mesh", "persistentVolumeClaim": "mesh-pvc"}]
    assert wire["resources"] == {"cpu": "500m", "memory": 4096, "ephemeralStorage": "1Gi", "gpu": 2}
    assert "command" not in wire  # absent stays absent
    assert parse_task_spec(wire) == task


def test_fields_can_be_given_by_python_name() -> None:
    task = SimulationTaskSpec(image="busybox", time_to_live="2h", max_resubmissions=0)
    assert task.to_dict()["timeToLive"] == "2h"
    assert task.to_dict()["maxResubmissions"] == 0


def test_parse_takes_any_mapping() -> None:
    body = MappingProxyType(
        {"image": "busybox", "nodeSelector": MappingProxyType({"disk": "ssd"}), "args": ("a", "b")}
    )
    task = parse_task_spec(body)
    assert task.node_selector == {"disk": "ssd"}
    assert task.args == ["a", "b"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image": ""}, "at least 1 character"),
        ({"imagePullPolicy": "Always"}, "Extra inputs are not permitted"),
        ({"resources": {"cpu": "1", "gpus": 1}}, "Extra inputs are not permitted"),
        ({"resources": {"cpu": "-1"}}, "non-negative quantity"),
        ({"resources": {"cpu": -1}}, "negative"),
        ({"resources": {"memory": "4GB"}}, "non-negative quantity"),
        ({"resources": {"memory": True}}, "memory"),
        ({"resources": {"gpu": -1}}, "greater than or equal to 0"),
        ({"timeToLive": "0s"}, "longer than zero"),
        ({"timeToLive": "1 hour"}, "not valid"),
        ({"ttlAfterFinished": "-1h"}, "negative"),
        ({"maxResubmissions": -1}, "greater than or equal to 0"),
        ({"fallbackAfterPreemptions": 0}, "greater than or equal to 1"),
        ({"retry": -1}, "greater than or equal to 0"),
        ({"fallbackMachineGroup": "cpu-standard"}, "requires spec.machineGroup"),
        ({"machineGroup": "a", "fallbackMachineGroup": "a"}, "must differ"),
        ({"machineGroup": "GPU_A100"}, "should match pattern"),
        ({"machineGroup": "g" * 64}, "at most 63 characters"),
        ({"inputs": [{"name": "mesh"}]}, "exactly one of"),
        ({"inputs": [{"name": "mesh", "configMap": "a", "secret": "b"}]}, "exactly one of"),
        ({"inputs": [{"name": "Mesh", "configMap": "a"}]}, "should match pattern"),
        (
            {"inputs": [{"name": "m", "configMap": "a"}, {"name": "m", "secret": "b"}]},
            "duplicate input names: m",
        ),
        ({"outputs": {}}, "persistentVolumeClaim"),
        ({"env": [{"name": "A", "value": "1", "valueFrom": {}}]}, "not both"),
        ({"env": [{"name": "SIMTASK_ATTEMPT", "value": "1"}]}, "set by the operator"),
        ({"env": [{"name": "A"}, {"name": "A"}]}, "duplicate environment variable names"),
        (
            {"podTemplate": {"metadata": {"labels": {"simtask.dev/task": "x"}}}},
            "set by the operator",
        ),
        ({"podTemplate": {"spec": {}}}, "Extra inputs are not permitted"),
        ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}, "takes no value"),
        (
            {"tolerations": [{"key": "k", "tolerationSeconds": 30}]},
            "only valid with effect NoExecute",
        ),
        ({"tolerations": [{"key": "k", "effect": "Sometimes"}]}, "effect"),
    ],
)
def test_invalid_specs_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**fields)


def test_image_is_required() -> None:
    with pytest.raises(ValidationError, match="image"):
        parse_task_spec({})


@pytest.mark.parametrize("value", ["500m", "4", "1.5", "16Gi", "1e3", ".5", 0, 8])
def test_quantities_accepted(value: int | str) -> None:
    resources = spec(resources={"cpu": value}).resources
    assert resources is not None
    assert resources.cpu == value


def test_tolerations_and_node_selector_pass_through() -> None:
    task = spec(
        tolerations=[
            {
                "key": "nvidia.com/gpu",
                "operator": "Equal",
                "value": "present",
                "effect": "NoSchedule",
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            },
        ],
        nodeSelector={"disk": "ssd"},
    )
    assert task.to_dict()["tolerations"][1] == {
        "key": "node.kubernetes.io/unreachable",
        "effect": "NoExecute",
        "tolerationSeconds": 60,
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"configMap": "case"}, ("configMap", "case")),
        ({"secret": "license"}, ("secret", "license")),
        ({"persistentVolumeClaim": "mesh"}, ("persistentVolumeClaim", "mesh")),
    ],
)
def test_input_source(source: dict[str, str], expected: tuple[str, str]) -> None:
    assert TaskInput.model_validate({"name": "in", **source}).source() == expected


# --- SimulationTaskStatus ---------------------------------------------------------------


def test_status_round_trip() -> None:
    body = {
        "phase": "SpotPreempted",
        "attempt": 2,
        "resubmissions": 1,
        "retry": 0,
        "reason": "NodeReclaimed",
        "message": "spot node cpu-spot-1 was reclaimed",
        "nextAttemptTime": "2026-01-02T03:04:10Z",
        "history": [
            {"phase": "Submitted", "time": "2026-01-02T03:00:00Z", "attempt": 1},
            {"phase": "SpotPreempted", "time": "2026-01-02T03:04:05Z", "reason": "NodeReclaimed"},
        ],
        "attempts": [
            {
                "attempt": 1,
                "jobName": "t-a1",
                "spot": True,
                "phase": "SpotPreempted",
                "startTime": "2026-01-02T03:01:00Z",
                "endTime": "2026-01-02T03:04:05Z",
                "cpuSeconds": 740.0,
                "gpuSeconds": 0.0,
            }
        ],
        "conditions": [
            {
                "type": "Succeeded",
                "status": "False",
                "reason": "Resubmitting",
                "message": "attempt 2 follows",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
                "observedGeneration": 1,
            }
        ],
    }
    status = parse_task_status(body)
    assert status.phase is Phase.SPOT_PREEMPTED
    assert status.history is not None
    assert status.history[1].phase is Phase.SPOT_PREEMPTED
    assert status.history[0].time == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert status.attempts is not None
    assert status.attempts[0].cpu_seconds == 740.0
    assert status.conditions is not None
    assert status.conditions[0].last_transition_time.tzinfo is not None
    assert status.to_dict() == body


def test_status_of_a_new_task_is_empty() -> None:
    assert parse_task_status(None).to_dict() == {}
    assert parse_task_status({}).phase is None


def test_status_ignores_fields_it_does_not_know() -> None:
    status = parse_task_status({"phase": "Held", "fromANewerOperator": 1})
    assert status.to_dict() == {"phase": "Held"}


def test_status_refuses_an_unknown_phase() -> None:
    with pytest.raises(ValidationError, match="phase"):
        parse_task_status({"phase": "Running"})


def test_attempt_record_dumps_times_as_rfc3339() -> None:
    record = AttemptRecord(attempt=1, start_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert record.to_dict() == {"attempt": 1, "startTime": "2026-01-02T03:04:05Z"}


@pytest.mark.parametrize("reason", ["", "two words", "Trailing-", "9Lives"])
def test_condition_reason_is_one_word(reason: str) -> None:
    with pytest.raises(ValidationError, match="reason"):
        Condition.model_validate(
            {
                "type": "Succeeded",
                "status": "True",
                "reason": reason,
                "message": "",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        )


def test_condition_status_is_a_word_not_a_bool() -> None:
    with pytest.raises(ValidationError, match="status"):
        Condition.model_validate(
            {
                "type": "Succeeded",
                "status": True,
                "reason": "Done",
                "message": "",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        )


# --- MachineGroup -----------------------------------------------------------------------


def test_machine_group_spec() -> None:
    group = parse_machine_group_spec(
        {"nodeSelector": {"cloud.google.com/gke-nodepool": "cpu-spot"}, "timeToLive": "8h"}
    )
    assert group.spot is None  # detect from node labels
    assert group.max_concurrent_tasks is None  # unlimited
    assert group.terminate is False
    assert group.time_to_live_seconds() == 8 * 3600


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "nodeSelector"),
        ({"nodeSelector": {}}, "at least 1 item"),
        ({"nodeSelector": {"a": "b"}, "maxConcurrentTasks": 0}, "greater than or equal to 1"),
        ({"nodeSelector": {"a": "b"}, "timeToLive": "0h"}, "longer than zero"),
        ({"nodeSelector": {"a": "b"}, "quota": 3}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_machine_group_specs_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MachineGroupSpec.model_validate(fields)


def test_machine_group_status() -> None:
    status = parse_machine_group_status(
        {
            "phase": "Expired",
            "nodes": 3,
            "readyNodes": 2,
            "spot": True,
            "expiresAt": "2026-01-02T11:00:00Z",
        }
    )
    assert status.phase is MachineGroupPhase.EXPIRED
    assert status.ready_nodes == 2
    assert status.to_dict()["expiresAt"] == "2026-01-02T11:00:00Z"
    assert parse_machine_group_status(None).phase is None


# --- examples/ --------------------------------------------------------------------------


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


EXAMPLE_FILES = ["quickstart.yaml", "cfd-cpu.yaml", "gpu-multi.yaml", "spot-fallback.yaml"]


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_is_valid_and_self_contained(name: str) -> None:
    """Every task parses, and the objects it refers to are defined in the same file."""
    documents = _documents(name)
    defined = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    tasks = [doc for doc in documents if doc["kind"] == "SimulationTask"]
    assert tasks
    for doc in documents:
        if doc["kind"] == "MachineGroup":
            assert doc["apiVersion"] == API_VERSION
            parse_machine_group_spec(doc["spec"])
    kinds = {
        "configMap": "ConfigMap",
        "secret": "Secret",
        "persistentVolumeClaim": "PersistentVolumeClaim",
    }
    for doc in tasks:
        assert doc["apiVersion"] == API_VERSION
        assert "namespace" not in doc["metadata"]
        task = parse_task_spec(doc["spec"])
        for group in (task.machine_group, task.fallback_machine_group):
            if group is not None:
                assert ("MachineGroup", group) in defined
        for item in task.inputs or []:
            kind, object_name = item.source()
            assert (kinds[kind], object_name) in defined
        if task.outputs is not None:
            assert ("PersistentVolumeClaim", task.outputs.persistent_volume_claim) in defined
        annotations = (
            task.pod_template.metadata.annotations
            if task.pod_template and task.pod_template.metadata
            else None
        )
        assert annotations is not None
        assert "testbed.simtask.dev/duration" in annotations


def test_quickstart_tells_the_three_stories() -> None:
    tasks = {
        doc["metadata"]["name"]: parse_task_spec(doc["spec"])
        for doc in _documents("quickstart.yaml")
    }
    assert len(tasks) == 3
    assert all(task.machine_group is None for task in tasks.values())
    annotations = {
        name: (task.pod_template.metadata.annotations or {})
        for name, task in tasks.items()
        if task.pod_template and task.pod_template.metadata
    }
    assert annotations["quickstart-hello"]["testbed.simtask.dev/duration"] == "5s"
    assert annotations["quickstart-diverges"]["testbed.simtask.dev/exit-code"] == "3"
    assert [name for name, task in tasks.items() if task.hold] == ["quickstart-held"]


def test_gpu_example_uses_the_gpu_pool() -> None:
    documents = {doc["kind"]: doc for doc in _documents("gpu-multi.yaml")}
    group = parse_machine_group_spec(documents["MachineGroup"]["spec"])
    assert documents["MachineGroup"]["metadata"]["name"] == "gpu-a100"
    assert group.node_selector == {"cloud.google.com/gke-nodepool": "gpu-a100"}
    assert group.tolerations is not None
    assert [t.to_dict() for t in group.tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    task = parse_task_spec(documents["SimulationTask"]["spec"])
    assert task.resources is not None
    assert task.resources.gpu == 2


def test_spot_example_falls_back_to_standard_nodes() -> None:
    documents = _documents("spot-fallback.yaml")
    groups = {
        doc["metadata"]["name"]: parse_machine_group_spec(doc["spec"])
        for doc in documents
        if doc["kind"] == "MachineGroup"
    }
    assert set(groups) == {"cpu-spot", "cpu-standard"}
    assert groups["cpu-spot"].tolerations is not None
    assert groups["cpu-spot"].tolerations[0].to_dict() == {
        "key": "cloud.google.com/gke-spot",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    }
    (task,) = [parse_task_spec(doc["spec"]) for doc in documents if doc["kind"] == "SimulationTask"]
    assert (task.machine_group, task.fallback_machine_group) == ("cpu-spot", "cpu-standard")
    assert task.resubmit_on_preemption
