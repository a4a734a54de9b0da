"""Bad input is refused by the API server itself, with a message that names the problem.

Every CEL rule (`x-kubernetes-validations`) of the CRDs in crds/ runs against the real
kube-apiserver here, creates and transition rules alike, together with the OpenAPI checks a
user meets first (durations, counts, names). The rules are read from the CRD files: a rule
added without a case in CEL_CASES fails `test_cel_rule`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ROOT, kubectl
from tests.e2e.tasks import IMAGE

BATCH_OWNED = ("hold", "kill", "retry", "ttlAfterFinished")

CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))
API_VERSION = "simtask.dev/v1alpha1"
TASK = "SimulationTask"
GROUP = "MachineGroup"
BATCH = "SimulationBatch"

#: In a spec of a case: remove this field from the valid base spec.
UNSET: Any = object()

Spec = dict[str, Any]


# ------------------------------------------------------------------ the rules, from the CRDs


@dataclass(frozen=True)
class Rule:
    """One `x-kubernetes-validations` entry of a CRD, where it sits in the schema."""

    kind: str
    path: str  # in the schema: .spec.env[].name, {} for map values
    rule: str
    message: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.message)

    @property
    def id(self) -> str:
        """A test id: the kind, the place and the first words of the message."""
        words = re.sub(r"[^A-Za-z0-9_]+", "-", " ".join(self.message.split()[:5]))
        return f"{self.kind}{self.path}:{words.strip('-')}"


def _walk(node: dict[str, Any], path: str, kind: str) -> Iterator[Rule]:
    for entry in node.get("x-kubernetes-validations") or []:
        # A rule without a message shows the user its CEL source: every rule must say why.
        assert entry.get("message"), f"{kind} {path or '.'}: rule without a message: {entry}"
        yield Rule(kind, path or ".", entry["rule"], entry["message"])
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}", kind)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]", kind)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}", kind)
    for combinator in ("anyOf", "allOf", "oneOf"):
        for child in node.get(combinator) or []:
            yield from _walk(child, path, kind)


def crd_rules() -> list[Rule]:
    """Every CEL rule of every CRD in crds/, in file order."""
    rules: list[Rule] = []
    for path in CRD_FILES:
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            rules.extend(_walk(version["schema"]["openAPIV3Schema"], "", kind))
    return rules


RULES = crd_rules()


# ------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    """An object (or an update of one) that the API server must refuse.

    Without `update` the object `spec` is created (server-side dry run); with it, the object
    is created for real from `spec` and then patched with `update` (a merge patch of spec).
    The refusal must name `field` and say `says`.
    """

    id: str
    spec: Spec
    field: str
    says: str
    update: Spec | None = None
    name: str | None = None


@dataclass(frozen=True)
class Accepted:
    """An object (or an update) the API server must accept: the rules are not too strict."""

    id: str
    spec: Spec
    update: Spec | None = None
    name: str | None = None


def task_spec(**changes: Any) -> Spec:
    """A valid SimulationTask spec, with `changes` (UNSET removes a field)."""
    spec: Spec = {"image": IMAGE, "command": ["simpleFoam"]}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not UNSET}


def group_spec(**changes: Any) -> Spec:
    """A valid MachineGroup spec, with `changes` (UNSET removes a field)."""
    spec: Spec = {"nodeSelector": {"cloud.google.com/gke-nodepool": "cpu-standard"}}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not UNSET}


def batch_spec(**changes: Any) -> Spec:
    """A valid SimulationBatch spec, with `changes` (UNSET removes a field)."""
    spec: Spec = {"template": task_spec(), "count": 2}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not UNSET}


EXISTS_WITH_VALUE = {"key": "k", "operator": "Exists", "value": "v", "effect": "NoSchedule"}
SECONDS_WITHOUT_NO_EXECUTE = {
    "key": "k",
    "operator": "Exists",
    "effect": "NoSchedule",
    "tolerationSeconds": 30,
}
TOLERATION_VALUE = "a toleration with operator Exists takes no value"
TOLERATION_SECONDS = "tolerationSeconds is only valid with effect NoExecute"
TTL_POSITIVE = "spec.timeToLive must be longer than zero"
KILL_STAYS = (
    "spec.kill cannot be set back to false once true, except together with raising "
    "spec.retry to run the task again"
)
RETRY_GROWS = (
    "spec.retry cannot decrease: it counts the retries asked for; raise it by one to run "
    "the task again"
)
TERMINATE_STAYS = "spec.terminate cannot be set back to false once true"

#: (kind, the rule's message, exactly as in the CRD) -> objects that break that rule.
CEL_CASES: dict[tuple[str, str], list[Case]] = {
    (
        TASK,
        "spec.fallbackMachineGroup requires spec.machineGroup: the fallback is used after "
        "preemptions on the machine group",
    ): [
        Case(
            "fallback-without-group",
            task_spec(fallbackMachineGroup="on-demand"),
            "spec.fallbackMachineGroup",
            "spec.fallbackMachineGroup requires spec.machineGroup",
        )
    ],
    (TASK, "spec.fallbackMachineGroup must differ from spec.machineGroup"): [
        Case(
            "fallback-equals-group",
            task_spec(machineGroup="spot-a100", fallbackMachineGroup="spot-a100"),
            "spec.fallbackMachineGroup",
            "spec.fallbackMachineGroup must differ from spec.machineGroup",
        )
    ],
    (TASK, KILL_STAYS): [
        Case("unkill", task_spec(kill=True), "spec.kill", KILL_STAYS, update={"kill": False}),
        # Removing the field: the default (false) comes back, which is the same un-kill.
        Case("unkill-by-removal", task_spec(kill=True), "spec.kill", KILL_STAYS, {"kill": None}),
        # A retry counter that does not rise does not excuse it.
        Case(
            "unkill-same-retry",
            task_spec(kill=True, retry=2),
            "spec.kill",
            KILL_STAYS,
            update={"kill": False, "retry": 2},
        ),
    ],
    (TASK, RETRY_GROWS): [
        Case("lower-retry", task_spec(retry=2), "spec.retry", RETRY_GROWS, update={"retry": 1}),
        Case(
            "retry-removed", task_spec(retry=2), "spec.retry", RETRY_GROWS, update={"retry": None}
        ),
    ],
    (TASK, "an environment variable takes either value or valueFrom, not both"): [
        Case(
            "env-value-and-value-from",
            task_spec(
                env=[
                    {
                        "name": "TOKEN",
                        "value": "x",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            ),
            "spec.env[0]",
            "an environment variable takes either value or valueFrom, not both",
        )
    ],
    (TASK, "environment variables starting with SIMTASK_ are set by the operator"): [
        Case(
            "env-simtask-prefix",
            task_spec(
                env=[{"name": "OK", "value": "1"}, {"name": "SIMTASK_ATTEMPT", "value": "9"}]
            ),
            "spec.env[1].name",
            "environment variables starting with SIMTASK_ are set by the operator",
        )
    ],
    (TASK, "spec.resources.cpu must be a non-negative quantity such as 500m or 4"): [
        Case(
            "cpu-negative",
            task_spec(resources={"cpu": -1}),
            "spec.resources.cpu",
            "spec.resources.cpu must be a non-negative quantity such as 500m or 4",
        )
    ],
    (TASK, "spec.resources.memory must be a non-negative quantity such as 512Mi or 16Gi"): [
        Case(
            "memory-negative",
            task_spec(resources={"memory": -1}),
            "spec.resources.memory",
            "spec.resources.memory must be a non-negative quantity such as 512Mi or 16Gi",
        )
    ],
    (TASK, "spec.resources.ephemeralStorage must be a non-negative quantity such as 10Gi"): [
        Case(
            "ephemeral-storage-negative",
            task_spec(resources={"ephemeralStorage": -5}),
            "spec.resources.ephemeralStorage",
            "spec.resources.ephemeralStorage must be a non-negative quantity such as 10Gi",
        )
    ],
    (TASK, "an input takes exactly one of configMap, secret or persistentVolumeClaim"): [
        Case(
            "input-two-sources",
            task_spec(inputs=[{"name": "mesh", "configMap": "mesh", "secret": "mesh"}]),
            "spec.inputs[0]",
            "an input takes exactly one of configMap, secret or persistentVolumeClaim",
        ),
        Case(
            "input-no-source",
            task_spec(inputs=[{"name": "mesh"}]),
            "spec.inputs[0]",
            "an input takes exactly one of configMap, secret or persistentVolumeClaim",
        ),
    ],
    (TASK, TTL_POSITIVE): [
        Case("ttl-zero", task_spec(timeToLive="0s"), "spec.timeToLive", TTL_POSITIVE),
        Case("ttl-zero-compound", task_spec(timeToLive="0h0.0m"), "spec.timeToLive", TTL_POSITIVE),
    ],
    (TASK, "labels with the simtask.dev/ prefix are set by the operator"): [
        Case(
            "pod-label-simtask-prefix",
            task_spec(podTemplate={"metadata": {"labels": {"simtask.dev/task": "other"}}}),
            "spec.podTemplate.metadata.labels",
            "labels with the simtask.dev/ prefix are set by the operator",
        )
    ],
    (TASK, TOLERATION_VALUE): [
        Case(
            "toleration-exists-with-value",
            task_spec(tolerations=[EXISTS_WITH_VALUE]),
            "spec.tolerations[0].value",
            TOLERATION_VALUE,
        )
    ],
    (TASK, TOLERATION_SECONDS): [
        Case(
            "toleration-seconds-without-no-execute",
            task_spec(tolerations=[SECONDS_WITHOUT_NO_EXECUTE]),
            "spec.tolerations[0].tolerationSeconds",
            TOLERATION_SECONDS,
        )
    ],
    (
        GROUP,
        "a MachineGroup name is at most 63 characters, so that it fits in the "
        "simtask.dev/machine-group label of its tasks' pods",
    ): [
        Case(
            "name-64-characters",
            group_spec(),
            "",  # a rule on the whole object names no field
            "a MachineGroup name is at most 63 characters",
            name="g" * 64,
        )
    ],
    (GROUP, TERMINATE_STAYS): [
        Case(
            "unterminate",
            group_spec(terminate=True),
            "spec.terminate",
            TERMINATE_STAYS,
            update={"terminate": False},
        ),
        Case(
            "unterminate-by-removal",
            group_spec(terminate=True),
            "spec.terminate",
            TERMINATE_STAYS,
            update={"terminate": None},
        ),
    ],
    (GROUP, TOLERATION_VALUE): [
        Case(
            "toleration-exists-with-value",
            group_spec(tolerations=[EXISTS_WITH_VALUE]),
            "spec.tolerations[0].value",
            TOLERATION_VALUE,
        )
    ],
    (GROUP, TOLERATION_SECONDS): [
        Case(
            "toleration-seconds-without-no-execute",
            group_spec(tolerations=[SECONDS_WITHOUT_NO_EXECUTE]),
            "spec.tolerations[0].tolerationSeconds",
            TOLERATION_SECONDS,
        )
    ],
    (GROUP, TTL_POSITIVE): [
        Case("ttl-zero", group_spec(timeToLive="0m"), "spec.timeToLive", TTL_POSITIVE),
    ],
}

BATCH_KILL_STAYS = (
    "spec.kill cannot be set back to false once true, except together with raising "
    "spec.retry to run the instances that did not succeed again"
)
BATCH_RETRY_GROWS = (
    "spec.retry cannot decrease: it counts the retries asked for; raise it by one to run the "
    "instances that did not succeed again"
)
ONE_OF_COUNT_INDEXES = "exactly one of spec.count and spec.indexes says which instances to run"
PARAMETERS_PER_INSTANCE = "spec.parameters must have one item per instance"
INDEXES_ASCENDING = (
    "spec.indexes must list ranges in ascending order, each as first-last with first <= last"
)
PARAMETER_KEYS = (
    "parameter keys are letters, digits and underscores (at most 100), so that "
    "SIMTASK_PARAM_<KEY> is an environment variable name"
)
CEL_CASES.update(
    {
        # A batch's template is a task spec: each of the task's create rules, in the template.
        (BATCH, message): [
            Case(
                case.id,
                batch_spec(template=case.spec),
                case.field.replace("spec.", "spec.template.", 1),
                case.says,
            )
            for case in cases
            if case.update is None
        ]
        for (kind, message), cases in CEL_CASES.items()
        if kind == TASK and message not in (KILL_STAYS, RETRY_GROWS)
    }
)
CEL_CASES.update(
    {
        (BATCH, ONE_OF_COUNT_INDEXES): [
            Case("count-and-indexes", batch_spec(indexes="0-1"), "spec", ONE_OF_COUNT_INDEXES),
            Case("neither", batch_spec(count=UNSET), "spec", ONE_OF_COUNT_INDEXES),
        ],
        (BATCH, PARAMETERS_PER_INSTANCE): [
            Case(
                "parameters-short-of-count",
                batch_spec(count=3, parameters=[{"A": "1"}, {"A": "2"}]),
                "spec.parameters",
                PARAMETERS_PER_INSTANCE,
            ),
            Case(
                "parameters-beyond-indexes",
                batch_spec(count=UNSET, indexes="0-2,5", parameters=[{"A": "1"}] * 5),
                "spec.parameters",
                PARAMETERS_PER_INSTANCE,
            ),
        ],
        (BATCH, INDEXES_ASCENDING): [
            Case(
                "indexes-descending",
                batch_spec(count=UNSET, indexes="5,1-2"),
                "spec.indexes",
                INDEXES_ASCENDING,
            ),
            Case(
                "range-backwards",
                batch_spec(count=UNSET, indexes="3-1"),
                "spec.indexes",
                INDEXES_ASCENDING,
            ),
        ],
        (BATCH, PARAMETER_KEYS): [
            Case(
                "parameter-key-with-a-dash",
                batch_spec(count=1, parameters=[{"re-number": "100"}]),
                "spec.parameters[0]",
                PARAMETER_KEYS,
            ),
        ],
        (BATCH, BATCH_KILL_STAYS): [
            Case("unkill", batch_spec(kill=True), "spec.kill", BATCH_KILL_STAYS, {"kill": False}),
        ],
        (BATCH, BATCH_RETRY_GROWS): [
            Case("lower-retry", batch_spec(retry=2), "spec.retry", BATCH_RETRY_GROWS, {"retry": 1}),
        ],
    }
)

SHOULD_MATCH = "in body should match"
AT_LEAST = "in body should be greater than or equal to"

#: What the OpenAPI part of the schemas refuses, as a user meets it.
OPENAPI_CASES: list[tuple[str, Case]] = [
    (TASK, Case("image-missing", task_spec(image=UNSET), "spec.image", "Required value")),
    (TASK, Case("image-empty", task_spec(image=""), "spec.image", "at least 1 chars long")),
    (TASK, Case("ttl-in-words", task_spec(timeToLive="2 hours"), "spec.timeToLive", SHOULD_MATCH)),
    (TASK, Case("ttl-forever", task_spec(timeToLive="forever"), "spec.timeToLive", SHOULD_MATCH)),
    (TASK, Case("ttl-no-unit", task_spec(timeToLive="90"), "spec.timeToLive", SHOULD_MATCH)),
    (TASK, Case("ttl-negative", task_spec(timeToLive="-5m"), "spec.timeToLive", SHOULD_MATCH)),
    (
        TASK,
        Case(
            "ttl-after-finished-in-words",
            task_spec(ttlAfterFinished="1 hour"),
            "spec.ttlAfterFinished",
            SHOULD_MATCH,
        ),
    ),
    (
        TASK,
        Case(
            "max-resubmissions-negative",
            task_spec(maxResubmissions=-1),
            "spec.maxResubmissions",
            f"{AT_LEAST} 0",
        ),
    ),
    (TASK, Case("retry-negative", task_spec(retry=-1), "spec.retry", f"{AT_LEAST} 0")),
    (
        TASK,
        Case(
            "gpu-negative", task_spec(resources={"gpu": -1}), "spec.resources.gpu", f"{AT_LEAST} 0"
        ),
    ),
    (
        TASK,
        Case(
            "fallback-after-zero-preemptions",
            task_spec(fallbackAfterPreemptions=0),
            "spec.fallbackAfterPreemptions",
            f"{AT_LEAST} 1",
        ),
    ),
    (
        TASK,
        Case(
            "cpu-not-a-quantity",
            task_spec(resources={"cpu": "lots"}),
            "spec.resources.cpu",
            SHOULD_MATCH,
        ),
    ),
    (
        TASK,
        Case(
            "cpu-negative-quantity",
            task_spec(resources={"cpu": "-1"}),
            "spec.resources.cpu",
            SHOULD_MATCH,
        ),
    ),
    (
        TASK,
        Case(
            "memory-not-a-quantity",
            task_spec(resources={"memory": "lots"}),
            "spec.resources.memory",
            SHOULD_MATCH,
        ),
    ),
    (
        TASK,
        Case(
            "memory-negative-quantity",
            task_spec(resources={"memory": "-1Gi"}),
            "spec.resources.memory",
            SHOULD_MATCH,
        ),
    ),
    (
        TASK,
        Case(
            "machine-group-not-a-name",
            task_spec(machineGroup="GPU_Pool"),
            "spec.machineGroup",
            SHOULD_MATCH,
        ),
    ),
    (
        TASK,
        Case(
            "input-name-not-a-dns-label",
            task_spec(inputs=[{"name": "Mesh/A", "configMap": "mesh"}]),
            "spec.inputs[0].name",
            SHOULD_MATCH,
        ),
    ),
    (
        TASK,
        Case(
            "duplicate-input-names",
            task_spec(
                inputs=[{"name": "mesh", "configMap": "a"}, {"name": "mesh", "configMap": "b"}]
            ),
            "spec.inputs[1]",
            "Duplicate value",
        ),
    ),
    (
        TASK,
        Case(
            "duplicate-env-names",
            task_spec(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
            "spec.env[1]",
            "Duplicate value",
        ),
    ),
    (
        TASK,
        Case(
            "outputs-without-claim",
            task_spec(outputs={}),
            "spec.outputs.persistentVolumeClaim",
            "Required value",
        ),
    ),
    (
        TASK,
        Case(
            "toleration-operator-unknown",
            task_spec(tolerations=[{"key": "k", "operator": "Maybe"}]),
            "spec.tolerations[0].operator",
            'Unsupported value: "Maybe"',
        ),
    ),
    # A misspelt field is refused (kubectl asks for strict field validation), not dropped.
    (TASK, Case("unknown-field", task_spec(gpus=2), "", 'unknown field "spec.gpus"')),
    (TASK, Case("hold-not-a-bool", task_spec(hold="yes"), "spec.hold", "must be of type boolean")),
    (
        TASK,
        Case(
            "pod-label-value-too-long",
            task_spec(podTemplate={"metadata": {"labels": {"team": "x" * 64}}}),
            "spec.podTemplate.metadata.labels.team",
            "may not be more than 63",
        ),
    ),
    (GROUP, Case("node-selector-missing", {}, "spec.nodeSelector", "Required value")),
    (BATCH, Case("template-missing", batch_spec(template=UNSET), "spec.template", "Required")),
    (BATCH, Case("count-zero", batch_spec(count=0), "spec.count", f"{AT_LEAST} 1")),
    (
        BATCH,
        Case("count-over-100000", batch_spec(count=100_001), "spec.count", "less than or equal"),
    ),
    (
        BATCH,
        Case(
            "indexes-in-words", batch_spec(count=UNSET, indexes="all"), "spec.indexes", SHOULD_MATCH
        ),
    ),
    (
        BATCH,
        Case(
            "index-100000",
            batch_spec(count=UNSET, indexes="0-100000"),
            "spec.indexes",
            SHOULD_MATCH,
        ),
    ),
    (
        BATCH,
        Case(
            "10001-parameters",
            batch_spec(count=10_001, parameters=[{"A": "1"}] * 10_001),
            "spec.parameters",
            "must have at most 10000 items",
        ),
    ),
    (
        BATCH,
        Case("parallelism-zero", batch_spec(parallelism=0), "spec.parallelism", f"{AT_LEAST} 1"),
    ),
    (
        BATCH,
        Case(
            "template-retry",
            batch_spec(template=task_spec(retry=1)),
            "",
            'unknown field "spec.template.retry"',
        ),
    ),
    (
        GROUP,
        Case(
            "node-selector-empty",
            group_spec(nodeSelector={}),
            "spec.nodeSelector",
            "should have at least 1 properties",
        ),
    ),
    (
        GROUP,
        Case(
            "max-concurrent-tasks-zero",
            group_spec(maxConcurrentTasks=0),
            "spec.maxConcurrentTasks",
            f"{AT_LEAST} 1",
        ),
    ),
    (
        GROUP,
        Case("ttl-in-words", group_spec(timeToLive="1 week"), "spec.timeToLive", SHOULD_MATCH),
    ),
    (
        GROUP,
        Case("spot-not-a-bool", group_spec(spot="yes"), "spec.spot", "must be of type boolean"),
    ),
]

FULL_TASK = task_spec(
    args=["-case", "/inputs/mesh"],
    env=[
        {"name": "OMP_NUM_THREADS", "value": "4"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ],
    workingDir="/work",
    resources={"cpu": "500m", "memory": "2Gi", "gpu": 1, "ephemeralStorage": "10Gi"},
    machineGroup="spot-a100",
    fallbackMachineGroup="ondemand-a100",
    fallbackAfterPreemptions=1,
    inputs=[
        {"name": "mesh", "configMap": "mesh"},
        {"name": "license", "secret": "license"},
        {"name": "data", "persistentVolumeClaim": "data"},
    ],
    outputs={"persistentVolumeClaim": "results"},
    timeToLive="1h30m",
    resubmitOnPreemption=False,
    maxResubmissions=0,
    hold=True,
    kill=False,
    retry=0,
    ttlAfterFinished="7d",
    podTemplate={"metadata": {"labels": {"team": "cfd"}, "annotations": {"note": "x"}}},
    priorityClassName="batch-low",
    tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "value": ""},
        {
            "key": "k",
            "operator": "Equal",
            "value": "v",
            "effect": "NoExecute",
            "tolerationSeconds": 60,
        },
    ],
    nodeSelector={"kubernetes.io/arch": "amd64"},
)

FULL_GROUP = group_spec(
    tolerations=[{"key": "cloud.google.com/gke-spot", "operator": "Exists"}],
    spot=True,
    maxConcurrentTasks=1,
    timeToLive="8h",
    terminate=False,
)

#: Objects and updates at the edge of each rule, which must be accepted.
ACCEPTED: list[tuple[str, Accepted]] = [
    (TASK, Accepted("minimal", task_spec())),
    (TASK, Accepted("every-field", FULL_TASK)),
    (TASK, Accepted("zero-quantities", task_spec(resources={"cpu": 0, "memory": "0", "gpu": 0}))),
    (TASK, Accepted("fractional-ttl", task_spec(timeToLive="0.5s", ttlAfterFinished="0s"))),
    (TASK, Accepted("kill", task_spec(), update={"kill": True})),
    (TASK, Accepted("unkill-with-retry", task_spec(kill=True), update={"kill": False, "retry": 1})),
    (TASK, Accepted("raise-retry", task_spec(retry=2), update={"retry": 3})),
    (TASK, Accepted("other-change-keeps-retry", task_spec(retry=2), update={"hold": True})),
    (TASK, Accepted("release", task_spec(hold=True), update={"hold": False})),
    (BATCH, Accepted("minimal", batch_spec())),
    (
        BATCH,
        Accepted(
            "every-field",
            batch_spec(
                template={k: v for k, v in FULL_TASK.items() if k not in BATCH_OWNED},
                count=UNSET,
                indexes="0-99,200,300-349",
                parameters=[{"RE": str(i), "mesh_2": "fine"} for i in range(151)],
                parallelism=10,
                maxFailedInstances=0,
                hold=True,
                kill=False,
                retry=0,
                ttlAfterFinished="1d",
            ),
        ),
    ),
    (BATCH, Accepted("100000-instances", batch_spec(count=100_000))),
    (BATCH, Accepted("index-99999", batch_spec(count=UNSET, indexes="0-99999"))),
    (BATCH, Accepted("touching-ranges", batch_spec(count=UNSET, indexes="0-3,3-5,6"))),
    (BATCH, Accepted("unkill-with-retry", batch_spec(kill=True), {"kill": False, "retry": 1})),
    (GROUP, Accepted("minimal", group_spec())),
    (GROUP, Accepted("every-field", FULL_GROUP)),
    (GROUP, Accepted("name-63-characters", group_spec(), name="g" * 63)),
    (GROUP, Accepted("terminate", group_spec(), update={"terminate": True})),
    (GROUP, Accepted("terminated-stays", group_spec(terminate=True), update={"spot": False})),
]


# ------------------------------------------------------------------ talking to the API server


def manifest(kind: str, name: str, spec: Spec) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def where(kind: str, namespace: str) -> list[str]:
    """kubectl's namespace arguments for `kind` (MachineGroups are cluster-scoped)."""
    return ["-n", namespace] if kind in (TASK, BATCH) else []


@pytest.fixture
def objects(namespace: str) -> Iterator[Callable[[str, str, Spec], None]]:
    """Create objects for real (for updates); MachineGroups are deleted after the test."""
    groups: list[str] = []

    def create(kind: str, name: str, spec: Spec) -> None:
        kubectl(
            "create",
            *where(kind, namespace),
            "-f",
            "-",
            input_text=json.dumps(manifest(kind, name, spec)),
        )
        if kind == GROUP:
            groups.append(name)

    yield create
    for name in groups:
        kubectl("delete", "machinegroup", name, "--ignore-not-found", "--wait=false", check=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def attempt(
    kind: str,
    namespace: str,
    create: Callable[[str, str, Spec], None],
    spec: Spec,
    update: Spec | None,
    name: str | None,
) -> tuple[int, str]:
    """Create `spec` (server-side dry run), or create it and patch it with `update`.

    Returns kubectl's exit code and what it printed on stderr.
    """
    name = name or unique(kind.lower())
    if update is None:
        proc = kubectl(
            "apply",
            "--dry-run=server",
            *where(kind, namespace),
            "-f",
            "-",
            input_text=json.dumps(manifest(kind, name, spec)),
            check=False,
        )
    else:
        create(kind, name, spec)
        proc = kubectl(
            "patch",
            kind.lower(),
            name,
            *where(kind, namespace),
            "--type=merge",
            "-p",
            json.dumps({"spec": update}),
            check=False,
        )
    return proc.returncode, proc.stderr


def assert_refused(
    kind: str, namespace: str, create: Callable[[str, str, Spec], None], case: Case
) -> None:
    code, err = attempt(kind, namespace, create, case.spec, case.update, case.name)
    assert code != 0, f"{kind} {case.id}: accepted, should be refused saying {case.says!r}"
    assert case.says in err, f"{kind} {case.id}: refused without saying {case.says!r}: {err}"
    if case.field:
        assert f"{case.field}: " in err, f"{kind} {case.id}: the refusal names no {case.field}"


# ------------------------------------------------------------------ the tests


def test_every_rule_has_a_case_and_every_case_a_rule() -> None:
    keys = [r.key for r in RULES]
    assert len(RULES) >= 19, "could not read the CEL rules of crds/"
    assert len(set(keys)) == len(keys), "two rules of one kind share a message: say which is which"
    stale = sorted(set(CEL_CASES) - set(keys))
    missing = sorted(set(keys) - set(CEL_CASES))
    assert (stale, missing) == ([], []), "CEL_CASES and the rules of crds/ differ (stale, missing)"


@pytest.mark.usefixtures("chart")
@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_cel_rule(rule: Rule, namespace: str, objects: Callable[[str, str, Spec], None]) -> None:
    cases = CEL_CASES.get(rule.key)
    assert cases, f"no case breaks the {rule.kind} rule at {rule.path}: {rule.rule}"
    for case in cases:
        assert_refused(rule.kind, namespace, objects, case)


@pytest.mark.usefixtures("chart")
@pytest.mark.parametrize(
    ("kind", "case"), OPENAPI_CASES, ids=[f"{k}:{c.id}" for k, c in OPENAPI_CASES]
)
def test_schema_refuses(
    kind: str, case: Case, namespace: str, objects: Callable[[str, str, Spec], None]
) -> None:
    assert_refused(kind, namespace, objects, case)


@pytest.mark.usefixtures("chart")
@pytest.mark.parametrize(("kind", "ok"), ACCEPTED, ids=[f"{k}:{a.id}" for k, a in ACCEPTED])
def test_valid_input_is_accepted(
    kind: str, ok: Accepted, namespace: str, objects: Callable[[str, str, Spec], None]
) -> None:
    code, err = attempt(kind, namespace, objects, ok.spec, ok.update, ok.name)
    assert code == 0, f"{kind} {ok.id}: refused: {err}"


@pytest.mark.usefixtures("chart")
@pytest.mark.parametrize(
    ("kind", "spec", "defaults"),
    [
        (
            TASK,
            task_spec(),
            {
                "resubmitOnPreemption": True,
                "maxResubmissions": 3,
                "fallbackAfterPreemptions": 2,
                "hold": False,
                "kill": False,
                "retry": 0,
                "keepLogs": "OnFailure",
            },
        ),
        (GROUP, group_spec(), {"terminate": False}),
    ],
    ids=[TASK, GROUP],
)
def test_defaults_are_filled_in(kind: str, spec: Spec, defaults: Spec, namespace: str) -> None:
    proc = kubectl(
        "create",
        "--dry-run=server",
        "-o",
        "json",
        *where(kind, namespace),
        "-f",
        "-",
        input_text=json.dumps(manifest(kind, unique(kind.lower()), spec)),
    )
    assert json.loads(proc.stdout)["spec"] == {**spec, **defaults}
