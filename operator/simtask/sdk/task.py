"""`Task`: one SimulationTask, in the idiom of the hosted simulation services' SDKs."""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simtask.api import AttemptRecord, HistoryEntry, SimulationTaskStatus, parse_task_status
from simtask.lifecycle import Phase, parse_phase
from simtask.sdk import logs as _logs
from simtask.sdk import operations
from simtask.sdk.client import (
    TASKS,
    Client,
    NotFoundError,
    SimObject,
    SimTaskError,
    default_client,
)
from simtask.sdk.outcome import task_final_phase
from simtask.sdk.outputs import download_outputs
from simtask.sdk.waiting import DELETED, OnChange, Ref, wait_for
from simtask.sdk.watching import wait_until

#: Phases in which the current attempt's simulator has not started, so has no log yet.
_NO_LOG_YET = (None, Phase.PENDING_INPUT, Phase.HELD, Phase.SUBMITTED, Phase.STARTED)
#: The prefix of a generated task name.
GENERATED_NAME_PREFIX = "task-"


class Task(SimObject):
    """A SimulationTask in the cluster: submit it, wait for it, steer it, read its results.

    Every method talks to the Kubernetes API with the user's own credentials; none caches
    more than the last copy of the task it read (`Task.obj`).
    """

    KIND = TASKS
    GENERATED_NAME_PREFIX = GENERATED_NAME_PREFIX

    # --- finding tasks -------------------------------------------------------------------

    @classmethod
    def list(
        cls,
        namespace: str | None = None,
        *,
        selector: str | None = None,
        all_namespaces: bool = False,
        client: Client | None = None,
    ) -> builtins.list[Task]:
        """The tasks of a namespace (or of all), optionally narrowed by a label selector."""
        client = client or default_client()
        where = None if all_namespaces else (namespace or client.namespace)
        items = client.list(TASKS, where, label_selector=selector).get("items") or []
        return [cls(item, client=client) for item in items]

    # --- what it is now ----------------------------------------------------------------

    @property
    def status(self) -> SimulationTaskStatus:
        """The status as last read (see `refresh`)."""
        return parse_task_status(self.obj.get("status"))

    @property
    def phase(self) -> Phase | None:
        """The phase as last read (see `refresh`); None before the operator saw the task."""
        return parse_phase((self.obj.get("status") or {}).get("phase"))

    @property
    def history(self) -> builtins.list[HistoryEntry]:
        """Every phase transition so far, oldest first (reads the task again)."""
        return self.refresh().status.history or []

    @property
    def attempts(self) -> builtins.list[AttemptRecord]:
        """Every attempt so far, with its executor and compute (reads the task again)."""
        return self.refresh().status.attempts or []

    def __repr__(self) -> str:
        return f"<Task {self.namespace}/{self.name} {self.phase or 'new'}>"

    # --- waiting -------------------------------------------------------------------------

    def wait(self, timeout: float | None = None, *, on_change: OnChange | None = None) -> Phase:
        """Block until the task ends; return the phase it ended in.

        Follows a watch, so it returns as soon as the task ends. `on_change` is called with
        each status change. TimeoutError after `timeout` seconds. On Ctrl-C
        (KeyboardInterrupt) the task is left running: see `sync_context` for the opposite.
        """
        ref = Ref(TASKS, self.namespace, self.name)
        phase = wait_for(self.client, [ref], timeout=timeout, on_change=on_change)[ref]
        if phase == DELETED:
            raise NotFoundError(f"simtask/{self.name} was deleted while waiting for it")
        self.refresh()
        return Phase(phase)

    @contextmanager
    def sync_context(self) -> Iterator[Task]:
        """Tie the task to a block of code: if the block raises (Ctrl-C included), the task
        is killed before the exception goes on.

            with task.sync_context():
                task.wait()
        """
        try:
            yield self
        except BaseException:
            self.kill()
            raise

    # --- steering ------------------------------------------------------------------------

    def kill(self) -> None:
        """Ask for the task to be stopped (`spec.kill`); it ends `Killed`."""
        operations.set_spec(self.client, TASKS, self.namespace, self.name, kill=True)

    def hold(self) -> None:
        """Keep the task from starting (`spec.hold`); only a task not started yet is held."""
        operations.set_spec(self.client, TASKS, self.namespace, self.name, hold=True)

    def release(self) -> None:
        """Let a held task start."""
        operations.set_spec(self.client, TASKS, self.namespace, self.name, hold=False)

    def retry(self) -> int:
        """Run an ended task again as a new attempt; returns the new `spec.retry`.

        The counter is raised with a resourceVersion precondition, so retries made at the
        same time by several users each count. A task that ended in `Success` is not re-run.
        """
        if self.refresh().phase == Phase.SUCCESS:
            raise SimTaskError(f"simtask/{self.name} ended in Success: there is nothing to retry")
        return operations.raise_retry(self.client, TASKS, self.namespace, self.name)

    # --- results -------------------------------------------------------------------------

    def logs(self, *, attempt: int | None = None, tail: int | None = None) -> str:
        """The simulator's log of `attempt` (default: the current one), the last `tail`
        lines; from the pod while it can be read, else the log the operator kept."""
        self.refresh()
        number = attempt or _logs.current_attempt(self.obj)
        return _logs.read_log(self.client, self.obj, number, tail)

    def follow_logs(
        self, *, attempt: int | None = None, tail: int | None = None, timeout: float | None = None
    ) -> Iterator[str]:
        """The log's lines as they are written, until the simulator ends. Waits (up to
        `timeout` seconds) for the current attempt's simulator to start first."""
        import time

        self.refresh()
        number = attempt or _logs.current_attempt(self.obj)
        if number == _logs.current_attempt(self.obj):

            def started(obj: dict[str, Any]) -> bool:
                # Until the simulator runs, its container has no log to read.
                phase = parse_phase((obj.get("status") or {}).get("phase"))
                return phase not in _NO_LOG_YET or task_final_phase(obj) is not None

            deadline = None if timeout is None else time.monotonic() + timeout
            self.obj = wait_until(
                self.client, TASKS, self.namespace, self.name, started, deadline=deadline
            )
        return _logs.follow_log(self.client, self.obj, number, tail)

    def download_outputs(
        self,
        directory: str | os.PathLike[str],
        *,
        image: str | None = None,
        start_timeout: float = 300,
    ) -> Path:
        """Copy the task's /outputs (its `spec.outputs` claim) into `directory`, through a
        short-lived read-only reader pod that is deleted afterwards (also on Ctrl-C);
        returns the path. SimTaskError when the reader has not started in `start_timeout`."""
        return download_outputs(
            self.client, self.refresh().obj, directory, image=image, start_timeout=start_timeout
        )
