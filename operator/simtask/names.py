"""Names the operator puts on the objects it owns: labels, annotations, environment variables."""

from __future__ import annotations

import hashlib

from simtask import GROUP

#: Set on every Job and pod of a task; the informers select on its presence.
LABEL_TASK_UID = f"{GROUP}/task-uid"
#: The task's name, for `kubectl get pods -l simtask.dev/task=NAME` (omitted when too long).
LABEL_TASK = f"{GROUP}/task"
#: The attempt number, as a decimal string.
LABEL_ATTEMPT = f"{GROUP}/attempt"
#: The MachineGroup the attempt was placed on, when it has one.
LABEL_MACHINE_GROUP = f"{GROUP}/machine-group"
#: On the Job: the full task name, whatever its length.
ANNOTATION_TASK_NAME = f"{GROUP}/task-name"

#: The one container that runs the simulator.
SIMULATOR_CONTAINER = "simulator"

ENV_TASK = "SIMTASK_TASK"
ENV_ATTEMPT = "SIMTASK_ATTEMPT"
ENV_PREVIOUS_ATTEMPT_PHASE = "SIMTASK_PREVIOUS_ATTEMPT_PHASE"

#: Where inputs and outputs are mounted in the simulator container.
INPUTS_DIR = "/inputs"
OUTPUTS_DIR = "/outputs"

_MAX_NAME = 63


def label_value_or_none(value: str) -> str | None:
    """`value` when it fits in a label value, otherwise None."""
    return value if len(value) <= _MAX_NAME else None


def job_name(task_name: str, attempt: int) -> str:
    """The deterministic name of the Job of one attempt, at most 63 characters.

    The same task and attempt always give the same name, so a create repeated after a
    crash answers AlreadyExists instead of starting a second Job.
    """
    return _suffixed(task_name, f"-a{attempt}")


#: On every instance of a SimulationBatch: the batch's name (omitted when too long).
LABEL_BATCH = f"{GROUP}/batch"
#: On every instance of a SimulationBatch: its index, as a decimal string.
LABEL_INDEX = f"{GROUP}/index"
#: On an instance: the batch's `spec.retry` its spec was last written for.
ANNOTATION_BATCH_RETRY = f"{GROUP}/batch-retry"
#: On an instance: its item of the batch's `spec.parameters`, as JSON.
ANNOTATION_PARAMETERS = f"{GROUP}/parameters"

ENV_BATCH = "SIMTASK_BATCH"
ENV_INDEX = "SIMTASK_INDEX"
ENV_PARAM_PREFIX = "SIMTASK_PARAM_"


def instance_name(batch_name: str, index: int) -> str:
    """The deterministic name of instance `index` of a batch: `<batch>-<index>`, at most 63
    characters (a long batch name is cut and made unique with a hash of it)."""
    return _suffixed(batch_name, f"-{index}")


def _suffixed(base: str, suffix: str) -> str:
    """`base` + `suffix` in at most 63 characters: a base too long is cut and made unique
    with a hash of it, so the same inputs always give the same name."""
    if len(base) + len(suffix) <= _MAX_NAME:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = _MAX_NAME - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"
