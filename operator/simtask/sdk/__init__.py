"""simtask.sdk: SimulationTasks and SimulationBatches from Python (SPEC §8).

    from simtask.sdk import Task

    task = Task.submit({"image": "ghcr.io/acme/solver:2", "args": ["--re", "5000"]})
    with task.sync_context():        # Ctrl-C or an error kills the task
        phase = task.wait()
    print(phase, task.logs(tail=20))

It is synchronous, and uses the user's kubeconfig and permissions (`configure` picks
another kubeconfig or context).
"""

from simtask.lifecycle import Phase
from simtask.sdk.batch import Batch, BatchSummary
from simtask.sdk.client import (
    Client,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    SimTaskError,
    configure,
)
from simtask.sdk.outcome import Change
from simtask.sdk.queue import queue
from simtask.sdk.task import Task
from simtask.sdk.waiting import WaitTimeout

__all__ = [
    "Batch",
    "BatchSummary",
    "Change",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "Phase",
    "SimTaskError",
    "Task",
    "WaitTimeout",
    "configure",
    "queue",
]
