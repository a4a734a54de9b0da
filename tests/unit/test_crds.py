"""The CRDs in crds/ and the models in simtask.api describe the same API, field for field."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from simtask import GROUP, VERSION
from simtask.api import (
    CONDITION_REASON_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    QUANTITY_PATTERN,
    MachineGroupPhase,
    MachineGroupSpec,
    MachineGroupStatus,
    SimulationTaskSpec,
    SimulationTaskStatus,
)
from simtask.durations import DURATION_PATTERN
from simtask.lifecycle import Phase

CRDS = Path(__file__).resolve().parents[2] / "crds"

Schema = dict[str, Any]


def _load(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((CRDS / name).read_text())
    return crd


TASK_CRD = _load("simulationtask.yaml")
GROUP_CRD = _load("machinegroup.yaml")


def _version(crd: dict[str, Any]) -> dict[str, Any]:
    versions: list[dict[str, Any]] = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == [VERSION]
    return versions[0]


def _root(crd: dict[str, Any]) -> Schema:
    schema: Schema = _version(crd)["schema"]["openAPIV3Schema"]
    return schema


def _at(schema: Schema, *path: str) -> Schema:
    for name in path:
        schema = schema["items"] if name == "[]" else schema["properties"][name]
    return schema


# --- the walk: model fields against schema properties ---------------------------------


def _members(annotation: Any) -> list[Any]:
    """The types a field can hold, with None, Annotated and unions taken apart."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    if annotation is type(None):
        return []
    return [annotation]


def _check_type(annotation: Any, prop: Schema, path: str) -> None:
    members = _members(annotation)
    if sorted(members, key=str) == [int, str]:
        assert prop.get("x-kubernetes-int-or-string") is True, path
        assert prop["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        return
    assert len(members) == 1, f"{path}: cannot map {annotation} to one schema type"
    (tp,) = members
    origin = typing.get_origin(tp)
    if origin is list:
        assert prop["type"] == "array", path
        _check_type(typing.get_args(tp)[0], prop["items"], f"{path}[]")
    elif origin is dict:
        assert prop["type"] == "object", path
        key, value = typing.get_args(tp)
        assert key is str, path
        if value is Any:
            assert prop.get("x-kubernetes-preserve-unknown-fields") is True, path
            assert "additionalProperties" not in prop, path
        else:
            assert "properties" not in prop, path
            _check_type(value, prop["additionalProperties"], f"{path}{{}}")
    elif origin is typing.Literal:
        assert prop["type"] == "string", path
        assert sorted(prop["enum"]) == sorted(typing.get_args(tp)), path
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        _check_model(tp, prop, path)
    elif isinstance(tp, type) and issubclass(tp, Enum):
        assert prop["type"] == "string", path
        assert sorted(prop["enum"]) == sorted(member.value for member in tp), path
    elif tp is bool:
        assert prop["type"] == "boolean", path
    elif tp is int:
        assert prop["type"] == "integer", path
    elif tp is float:
        assert prop["type"] == "number", path
    elif tp is str:
        assert prop["type"] == "string", path
        assert "format" not in prop, path
    elif tp is datetime:
        assert prop["type"] == "string", path
        assert prop["format"] == "date-time", path
    else:  # pragma: no cover - a new kind of field needs a rule here
        raise AssertionError(f"{path}: no rule for {tp}")


def _check_model(model: type[BaseModel], schema: Schema, path: str) -> None:
    assert schema["type"] == "object", path
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    properties: Schema = schema.get("properties", {})
    assert set(properties) == set(fields), (
        f"{path}: only in CRD {sorted(set(properties) - set(fields))}, "
        f"only in {model.__name__} {sorted(set(fields) - set(properties))}"
    )
    required = {alias for alias, field in fields.items() if field.is_required()}
    assert set(schema.get("required", [])) == required, f"{path}: required"
    for alias, field in fields.items():
        prop = properties[alias]
        where = f"{path}.{alias}"
        if field.is_required():
            assert "default" not in prop, where
        else:
            assert prop.get("default") == field.default, f"{where}: default"
        _check_type(field.annotation, prop, where)


@pytest.mark.parametrize(
    ("crd", "part", "model"),
    [
        (TASK_CRD, "spec", SimulationTaskSpec),
        (TASK_CRD, "status", SimulationTaskStatus),
        (GROUP_CRD, "spec", MachineGroupSpec),
        (GROUP_CRD, "status", MachineGroupStatus),
    ],
    ids=["task-spec", "task-status", "group-spec", "group-status"],
)
def test_schema_equals_model(crd: dict[str, Any], part: str, model: type[BaseModel]) -> None:
    root = _root(crd)
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert root["required"] == ["spec"]
    _check_model(model, root["properties"][part], part)


def test_the_walk_sees_a_difference() -> None:
    """The walk itself fails on a schema that lacks a field, so its passes mean something."""
    schema = _at(_root(TASK_CRD), "spec")
    broken = {
        **schema,
        "properties": {k: v for k, v in schema["properties"].items() if k != "kill"},
    }
    with pytest.raises(AssertionError, match="kill"):
        _check_model(SimulationTaskSpec, broken, "spec")
    wrong_default = {
        **schema,
        "properties": {**schema["properties"], "retry": {"type": "integer", "default": 1}},
    }
    with pytest.raises(AssertionError, match="retry: default"):
        _check_model(SimulationTaskSpec, wrong_default, "spec")


def _preserve_unknown(schema: Schema, path: str = "") -> list[str]:
    found = [path] if schema.get("x-kubernetes-preserve-unknown-fields") else []
    for name, prop in schema.get("properties", {}).items():
        found += _preserve_unknown(prop, f"{path}.{name}")
    if "items" in schema:
        found += _preserve_unknown(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += _preserve_unknown(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_unknown_fields_are_pruned_everywhere_but_env_value_from() -> None:
    assert _preserve_unknown(_root(TASK_CRD)) == [".spec.env[].valueFrom"]
    assert _preserve_unknown(_root(GROUP_CRD)) == []


# --- names, scope, subresources, printer columns (SPEC §2) ----------------------------


def test_simulationtask_names() -> None:
    spec = TASK_CRD["spec"]
    assert TASK_CRD["metadata"]["name"] == f"simulationtasks.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "SimulationTask"
    assert spec["names"]["plural"] == "simulationtasks"
    assert spec["names"]["singular"] == "simulationtask"
    # simtask and st are SPEC names; simtasks makes `kubectl get simtasks` (SPEC §1) work.
    assert spec["names"]["shortNames"] == ["simtask", "simtasks", "st"]
    assert spec["names"]["categories"] == ["simulation"]
    version = _version(TASK_CRD)
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_machinegroup_names() -> None:
    spec = GROUP_CRD["spec"]
    assert GROUP_CRD["metadata"]["name"] == f"machinegroups.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == "MachineGroup"
    assert spec["names"]["plural"] == "machinegroups"
    assert spec["names"]["shortNames"] == ["mg"]
    version = _version(GROUP_CRD)
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def _columns(crd: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in _version(crd)["additionalPrinterColumns"]
    ]


def test_simulationtask_printer_columns() -> None:
    assert _columns(TASK_CRD) == [
        ("Phase", "string", ".status.phase", 0),
        ("Attempt", "integer", ".status.attempt", 0),
        ("Group", "string", ".status.machineGroup", 0),
        ("Node", "string", ".status.nodeName", 1),
        ("Reason", "string", ".status.reason", 1),
        ("Duration", "string", ".status.duration", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ]


def test_machinegroup_printer_columns() -> None:
    assert _columns(GROUP_CRD) == [
        ("Phase", "string", ".status.phase", 0),
        ("Spot", "boolean", ".status.spot", 0),
        ("Nodes", "integer", ".status.nodes", 0),
        ("GPUs", "integer", ".status.gpus", 0),
        ("Running", "integer", ".status.runningTasks", 0),
        ("Queued", "integer", ".status.queuedTasks", 0),
        ("Max", "integer", ".spec.maxConcurrentTasks", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ]


_COLUMN_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean"}


@pytest.mark.parametrize("crd", [TASK_CRD, GROUP_CRD], ids=["task", "group"])
def test_printer_columns_point_at_schema_fields(crd: dict[str, Any]) -> None:
    for name, kind, json_path, _ in _columns(crd):
        if json_path.startswith(".metadata."):
            continue
        prop = _at(_root(crd), *json_path.lstrip(".").split("."))
        assert prop["type"] == _COLUMN_TYPES[kind], name


# --- enums and patterns shared with the Python side -----------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ("status", "phase"),
        ("status", "history", "[]", "phase"),
        ("status", "attempts", "[]", "phase"),
    ],
)
def test_task_phases_are_the_lifecycle_phases(path: tuple[str, ...]) -> None:
    enum = _at(_root(TASK_CRD), *path)["enum"]
    assert len(enum) == len(set(enum)) == 17
    assert set(enum) == {phase.value for phase in Phase}


def test_machinegroup_phases() -> None:
    enum = _at(_root(GROUP_CRD), "status", "phase")["enum"]
    assert (
        enum == [phase.value for phase in MachineGroupPhase] == ["Active", "Terminated", "Expired"]
    )


@pytest.mark.parametrize(
    ("crd", "path"),
    [
        (TASK_CRD, ("spec", "timeToLive")),
        (TASK_CRD, ("spec", "ttlAfterFinished")),
        (GROUP_CRD, ("spec", "timeToLive")),
    ],
)
def test_duration_fields_use_the_parser_grammar(crd: dict[str, Any], path: tuple[str, ...]) -> None:
    assert _at(_root(crd), *path)["pattern"] == DURATION_PATTERN


@pytest.mark.parametrize("field", ["cpu", "memory", "ephemeralStorage"])
def test_quantity_fields(field: str) -> None:
    prop = _at(_root(TASK_CRD), "spec", "resources", field)
    assert prop["pattern"] == QUANTITY_PATTERN
    assert any("quantity(self)" in rule["rule"] for rule in prop["x-kubernetes-validations"])


def test_name_patterns() -> None:
    spec = _at(_root(TASK_CRD), "spec")
    assert _at(spec, "inputs", "[]", "name")["pattern"] == DNS_LABEL_PATTERN
    assert _at(spec, "machineGroup")["pattern"] == DNS_SUBDOMAIN_PATTERN
    assert _at(spec, "fallbackMachineGroup")["pattern"] == DNS_SUBDOMAIN_PATTERN
    for crd in (TASK_CRD, GROUP_CRD):
        reason = _at(_root(crd), "status", "conditions", "[]", "reason")
        assert reason["pattern"] == CONDITION_REASON_PATTERN


@pytest.mark.parametrize(
    ("crd", "path", "key"),
    [
        (TASK_CRD, ("status", "conditions"), "type"),
        (GROUP_CRD, ("status", "conditions"), "type"),
        (TASK_CRD, ("spec", "inputs"), "name"),
        (TASK_CRD, ("spec", "env"), "name"),
    ],
)
def test_list_maps(crd: dict[str, Any], path: tuple[str, ...], key: str) -> None:
    prop = _at(_root(crd), *path)
    assert prop["x-kubernetes-list-type"] == "map"
    assert prop["x-kubernetes-list-map-keys"] == [key]
    assert key in prop["items"]["required"]


# --- CEL rules ------------------------------------------------------------------------


def _rules(schema: Schema, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, rule) for rule in schema.get("x-kubernetes-validations", [])]
    for name, prop in schema.get("properties", {}).items():
        found += _rules(prop, f"{path}.{name}")
    if "items" in schema:
        found += _rules(schema["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("crd", [TASK_CRD, GROUP_CRD], ids=["task", "group"])
def test_every_rule_has_a_message(crd: dict[str, Any]) -> None:
    rules = _rules(_root(crd))
    assert rules
    for path, rule in rules:
        assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, path
        assert rule["rule"].strip(), path
        assert len(rule["message"]) > 20, path


def test_task_rules_cover_the_cross_field_checks() -> None:
    spec_rules = {
        rule["fieldPath"]: rule["rule"] for path, rule in _rules(_root(TASK_CRD)) if path == ".spec"
    }
    assert "oldSelf.kill" in spec_rules[".kill"]
    assert "self.retry >= oldSelf.retry" in spec_rules[".retry"]
    assert "self.fallbackMachineGroup != self.machineGroup" in spec_rules[".fallbackMachineGroup"]


def test_transition_rules_sit_on_the_spec_and_guard_with_has() -> None:
    """Transition rules on optional fields would never run; ours check has() on the spec."""
    for crd in (TASK_CRD, GROUP_CRD):
        for path, rule in _rules(_root(crd)):
            if "oldSelf" in rule["rule"]:
                assert path == ".spec", path
                assert "has(oldSelf." in rule["rule"], path


def test_rules_are_bounded_for_the_cost_estimator() -> None:
    """Strings and lists that rules iterate over carry maxLength/maxItems."""
    spec = _at(_root(TASK_CRD), "spec")
    for name in ("env", "inputs", "tolerations"):
        assert "maxItems" in spec["properties"][name], name
    bounded: list[tuple[str, ...]] = [("env", "[]", "name"), ("timeToLive",), ("resources", "cpu")]
    for path in bounded:
        assert "maxLength" in _at(spec, *path), path
    assert "maxProperties" in _at(spec, "podTemplate", "metadata", "labels")
