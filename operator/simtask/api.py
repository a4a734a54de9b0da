"""Pydantic models of the SimulationTask and MachineGroup API, field for field as in `crds/`.

Field names are snake_case in Python and camelCase on the wire. `tests/unit/test_crds.py`
checks that every property, required list and default here equals the CRDs' schemas.
Spec models refuse unknown fields; status models ignore them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.alias_generators import to_camel

from simtask.durations import parse_duration
from simtask.lifecycle import Phase

#: The CRDs' pattern for quantity strings (Kubernetes' own, without a sign).
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: A DNS-1123 label: input names.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1123 subdomain: MachineGroup references (at most 63 characters, to fit a label).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A condition reason: one CamelCase word (metav1.Condition's pattern).
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

#: Environment variables the operator sets on every pod; users may not set them.
RESERVED_ENV_PREFIX = "SIMTASK_"
#: Label prefix the operator sets on every Job and pod; users may not set it.
RESERVED_LABEL_PREFIX = "simtask.dev/"

_QUANTITY = re.compile(QUANTITY_PATTERN)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity {value} is negative")
    elif not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a non-negative quantity such as 500m, 4 or 16Gi")
    return value


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


def _check_positive_duration(value: str) -> str:
    if parse_duration(value).total_seconds() <= 0:
        raise ValueError(f"duration {value!r} must be longer than zero")
    return value


#: A Kubernetes resource quantity: an integer or a string such as "500m" or "16Gi".
Quantity = Annotated[StrictInt | StrictStr, AfterValidator(_check_quantity)]
#: A duration string such as "90s" or "1h30m" (see `simtask.durations`).
Duration = Annotated[str, AfterValidator(_check_duration)]
#: A duration string that is longer than zero.
PositiveDuration = Annotated[str, AfterValidator(_check_positive_duration)]
#: The name of a MachineGroup.
MachineGroupName = Annotated[str, Field(max_length=63, pattern=DNS_SUBDOMAIN_PATTERN)]
#: The name of a ConfigMap, Secret or PersistentVolumeClaim.
ObjectName = Annotated[str, Field(min_length=1, max_length=253)]


class _ApiModel(BaseModel):
    """Base of the spec models: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes shows it: camelCase keys, absent fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _StatusModel(_ApiModel):
    """Base of the status models: unknown fields (from another operator version) ignored."""

    model_config = ConfigDict(extra="ignore")


# --- shared --------------------------------------------------------------------------


class Toleration(_ApiModel):
    """A pod toleration, as in the core API."""

    key: str | None = None
    operator: Literal["", "Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds is only valid with effect NoExecute")
        return self


class Condition(_StatusModel):
    """A status condition in the shape of metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=CONDITION_REASON_PATTERN)
    message: str
    last_transition_time: datetime
    observed_generation: int | None = None


# --- SimulationTask ------------------------------------------------------------------


class EnvVar(_ApiModel):
    """An environment variable of the simulator container."""

    name: str = Field(min_length=1)
    value: str | None = None
    #: As in a Kubernetes container (secretKeyRef, configMapKeyRef, fieldRef, ...).
    value_from: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError("an environment variable takes either value or valueFrom, not both")
        if self.name.startswith(RESERVED_ENV_PREFIX):
            raise ValueError(
                f"environment variables starting with {RESERVED_ENV_PREFIX} are set by the operator"
            )
        return self


class Resources(_ApiModel):
    """Resource requests of the simulator container; `gpu` counts nvidia.com/gpu."""

    cpu: Quantity | None = None
    memory: Quantity | None = None
    ephemeral_storage: Quantity | None = None
    gpu: int | None = Field(default=None, ge=0)


InputKind = Literal["configMap", "secret", "persistentVolumeClaim"]


class TaskInput(_ApiModel):
    """An object mounted read-only at /inputs/<name>: exactly one of the three sources."""

    name: str = Field(max_length=63, pattern=DNS_LABEL_PATTERN)
    config_map: ObjectName | None = None
    secret: ObjectName | None = None
    persistent_volume_claim: ObjectName | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = [self.config_map, self.secret, self.persistent_volume_claim]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                f"input {self.name!r} takes exactly one of configMap, secret or "
                "persistentVolumeClaim"
            )
        return self

    def source(self) -> tuple[InputKind, str]:
        """Which kind of object the input is, and its name."""
        if self.config_map is not None:
            return "configMap", self.config_map
        if self.secret is not None:
            return "secret", self.secret
        assert self.persistent_volume_claim is not None  # guaranteed by _one_source
        return "persistentVolumeClaim", self.persistent_volume_claim


class TaskOutputs(_ApiModel):
    """Where /outputs is written."""

    persistent_volume_claim: ObjectName


class PodTemplateMetadata(_ApiModel):
    """Labels and annotations copied onto every pod of a task."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @model_validator(mode="after")
    def _no_reserved_labels(self) -> Self:
        for key in self.labels or {}:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(
                    f"label {key!r}: labels with the {RESERVED_LABEL_PREFIX} prefix are set "
                    "by the operator"
                )
        return self


class PodTemplate(_ApiModel):
    """What is copied onto every pod of a task."""

    metadata: PodTemplateMetadata | None = None


class SimulationTaskSpec(_ApiModel):
    """`spec` of a SimulationTask (SPEC §2); defaults are the CRD's."""

    image: str = Field(min_length=1)
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    working_dir: str | None = None
    resources: Resources | None = None
    machine_group: MachineGroupName | None = None
    inputs: list[TaskInput] | None = None
    outputs: TaskOutputs | None = None
    time_to_live: PositiveDuration | None = None
    resubmit_on_preemption: bool = True
    max_resubmissions: int = Field(default=3, ge=0)
    fallback_machine_group: MachineGroupName | None = None
    fallback_after_preemptions: int = Field(default=2, ge=1)
    hold: bool = False
    kill: bool = False
    retry: int = Field(default=0, ge=0)
    ttl_after_finished: Duration | None = None
    #: Which attempts' logs are kept in a ConfigMap when they end (SPEC §7).
    keep_logs: Literal["OnFailure", "Always", "Never"] = "OnFailure"
    pod_template: PodTemplate | None = None
    priority_class_name: str | None = None
    tolerations: list[Toleration] | None = None
    node_selector: dict[str, str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.fallback_machine_group is not None:
            if self.machine_group is None:
                raise ValueError("spec.fallbackMachineGroup requires spec.machineGroup")
            if self.fallback_machine_group == self.machine_group:
                raise ValueError("spec.fallbackMachineGroup must differ from spec.machineGroup")
        for items, what in ((self.inputs, "input"), (self.env, "environment variable")):
            names = [item.name for item in items or []]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"duplicate {what} names: {', '.join(duplicates)}")
        return self

    def time_to_live_seconds(self) -> float | None:
        """`spec.timeToLive` in seconds, or None when the task has no limit."""
        if self.time_to_live is None:
            return None
        return parse_duration(self.time_to_live).total_seconds()

    def ttl_after_finished_seconds(self) -> float | None:
        """`spec.ttlAfterFinished` in seconds, or None when the task is kept."""
        if self.ttl_after_finished is None:
            return None
        return parse_duration(self.ttl_after_finished).total_seconds()


class HistoryEntry(_StatusModel):
    """One phase transition in `status.history`."""

    phase: Phase
    time: datetime
    reason: str | None = None
    message: str | None = None
    attempt: int | None = None


class AttemptRecord(_StatusModel):
    """One attempt in `status.attempts`: its executor, the phase it ended in, its cost."""

    attempt: int
    job_name: str | None = None
    pod_name: str | None = None
    node_name: str | None = None
    machine_group: str | None = None
    spot: bool | None = None
    phase: Phase | None = None
    reason: str | None = None
    #: How it ended, in words (a failed simulator's last log lines included).
    message: str | None = None
    exit_code: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: CPU requested times seconds run.
    cpu_seconds: float | None = None
    #: GPUs requested times seconds run.
    gpu_seconds: float | None = None


class SimulationTaskStatus(_StatusModel):
    """`status` of a SimulationTask (SPEC §2), written only by the operator."""

    phase: Phase | None = None
    attempt: int | None = None
    resubmissions: int | None = None
    #: The last `spec.retry` the operator honoured.
    retry: int | None = None
    reason: str | None = None
    message: str | None = None
    job_name: str | None = None
    pod_name: str | None = None
    node_name: str | None = None
    machine_group: str | None = None
    exit_code: int | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    #: From startTime to completionTime, as `simtask.durations.format_duration` writes it.
    duration: str | None = None
    observed_generation: int | None = None
    queue_position: int | None = None
    #: When the backoff before a resubmission ends.
    next_attempt_time: datetime | None = None
    history: list[HistoryEntry] | None = None
    attempts: list[AttemptRecord] | None = None
    conditions: list[Condition] | None = None


# --- MachineGroup --------------------------------------------------------------------


class MachineGroupPhase(StrEnum):
    """The values of a MachineGroup's `status.phase`."""

    ACTIVE = "Active"
    TERMINATED = "Terminated"
    EXPIRED = "Expired"


class MachineGroupSpec(_ApiModel):
    """`spec` of a MachineGroup: which nodes belong to it and how it is used."""

    node_selector: dict[str, str] = Field(min_length=1)
    tolerations: list[Toleration] | None = None
    #: None: detected from node labels.
    spot: bool | None = None
    #: None: unlimited.
    max_concurrent_tasks: int | None = Field(default=None, ge=1)
    time_to_live: PositiveDuration | None = None
    terminate: bool = False

    def time_to_live_seconds(self) -> float | None:
        """`spec.timeToLive` in seconds, or None when the group does not expire."""
        if self.time_to_live is None:
            return None
        return parse_duration(self.time_to_live).total_seconds()


class MachineGroupStatus(_StatusModel):
    """`status` of a MachineGroup, written only by the operator."""

    phase: MachineGroupPhase | None = None
    nodes: int | None = None
    ready_nodes: int | None = None
    gpus: int | None = None
    #: Whether the group is spot: spec.spot, or detected from its nodes' labels.
    spot: bool | None = None
    running_tasks: int | None = None
    queued_tasks: int | None = None
    expires_at: datetime | None = None
    observed_generation: int | None = None
    reason: str | None = None
    message: str | None = None
    conditions: list[Condition] | None = None


# --- parsing -------------------------------------------------------------------------


def _plain(value: object) -> object:
    """A deep copy made of dicts and lists, from any mappings and sequences (kopf's views)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def parse_task_spec(body_spec: Mapping[str, Any]) -> SimulationTaskSpec:
    """The SimulationTaskSpec of a task's `spec`; raises pydantic.ValidationError if invalid."""
    return SimulationTaskSpec.model_validate(_plain(body_spec))


def parse_task_status(body_status: Mapping[str, Any] | None) -> SimulationTaskStatus:
    """The SimulationTaskStatus of a task's `status` (empty when it has none yet)."""
    return SimulationTaskStatus.model_validate(_plain(body_status or {}))


def parse_machine_group_spec(body_spec: Mapping[str, Any]) -> MachineGroupSpec:
    """The MachineGroupSpec of a group's `spec`; raises pydantic.ValidationError if invalid."""
    return MachineGroupSpec.model_validate(_plain(body_spec))


def parse_machine_group_status(body_status: Mapping[str, Any] | None) -> MachineGroupStatus:
    """The MachineGroupStatus of a group's `status` (empty when it has none yet)."""
    return MachineGroupStatus.model_validate(_plain(body_status or {}))
