"""simtask.sdk on the local cluster, through the real API server: submit and wait, what a
Ctrl-C does inside and outside `sync_context()`, retry without lost updates."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import pytest

from simtask.sdk import Change, Client, NotFoundError, Phase, Task, WaitTimeout, operations
from simtask.sdk.client import TASKS, ConflictError
from tests.e2e.cluster import KUBECONFIG
from tests.e2e.simtask_cli import python_script
from tests.e2e.tasks import HEADROOM, IMAGE, get, history, wait_phase

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def sdk(cluster: str) -> Client:
    return Client.connect(str(KUBECONFIG))


def spec(duration: str, exit_code: int = 0) -> dict[str, Any]:
    """A SimulationTask spec whose simulated run lasts `duration`."""
    return {
        "image": IMAGE,
        "resources": {"cpu": "1", "memory": "1Gi"},
        "podTemplate": {
            "metadata": {
                "annotations": {
                    "testbed.simtask.dev/duration": duration,
                    "testbed.simtask.dev/exit-code": str(exit_code),
                }
            }
        },
    }


def test_submit_then_wait_returns_the_final_phase(namespace: str, sdk: Client) -> None:
    task = Task.submit(spec("2s"), namespace=namespace, client=sdk)
    assert task.name.startswith("task-")  # a generated name
    changes: list[Change] = []
    assert task.wait(timeout=4 + HEADROOM, on_change=changes.append) is Phase.SUCCESS
    assert task.phase is Phase.SUCCESS
    assert [h.phase for h in task.history] == history(get(namespace, task.name))
    # Every change after the one it found, once each.
    assert [c.phase for c in changes] == history(get(namespace, task.name))[-len(changes) :]
    assert changes[-1].phase == "Success"

    failing = Task.submit(spec("1s", exit_code=3), name="three", namespace=namespace, client=sdk)
    assert failing.wait(timeout=4 + HEADROOM) is Phase.FAILED
    assert failing.status.exit_code == 3


def test_wait_gives_up_at_its_timeout(namespace: str, sdk: Client) -> None:
    task = Task.submit(spec("10m"), name="long", namespace=namespace, client=sdk)
    with pytest.raises(WaitTimeout):
        task.wait(timeout=1)
    assert Task.get("long", namespace, client=sdk).phase not in (Phase.KILLED, Phase.PENDING_KILLED)


def test_an_unknown_task_raises_not_found(namespace: str, sdk: Client) -> None:
    with pytest.raises(NotFoundError, match="nothing"):
        Task.get("nothing", namespace, client=sdk)


class StaleFirstRead(Client):
    """A client whose first read of a task is a stale copy, as if another user wrote in
    between our read and our write."""

    def __init__(self, base: Client, stale: dict[str, Any]) -> None:
        super().__init__(base.api, base.namespace)
        self.stale: dict[str, Any] | None = stale

    def get(self, kind: Any, namespace: str, name: str) -> dict[str, Any]:
        if self.stale is not None:
            stale, self.stale = self.stale, None
            return stale
        return super().get(kind, namespace, name)


def test_retry_rereads_after_a_conflict_so_no_raise_is_lost(namespace: str, sdk: Client) -> None:
    task = Task.submit(spec("1s", exit_code=1), name="flaky", namespace=namespace, client=sdk)
    assert task.wait(timeout=4 + HEADROOM) is Phase.FAILED
    stale = sdk.get(TASKS, namespace, "flaky")
    # Another user raises the counter after our (stale) read ...
    sdk.patch(TASKS, namespace, "flaky", {"spec": {"retry": 1}})
    # ... so writing with the stale resourceVersion is refused by the API server ...
    with pytest.raises(ConflictError):
        sdk.patch(
            TASKS,
            namespace,
            "flaky",
            {
                "metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                "spec": {"retry": 1},
            },
        )
    # ... and retry() reads again and counts both raises.
    assert operations.raise_retry(StaleFirstRead(sdk, stale), TASKS, namespace, "flaky") == 2
    assert get(namespace, "flaky")["spec"]["retry"] == 2


def test_an_exception_inside_sync_context_kills_the_task(namespace: str, sdk: Client) -> None:
    task = Task.submit(spec("10m"), name="doomed", namespace=namespace, client=sdk)
    with pytest.raises(RuntimeError), task.sync_context():
        raise RuntimeError("the post-processing crashed")
    wait_phase(namespace, "doomed", "Killed")


SCRIPT = """
import sys
from simtask.sdk import Task

name, namespace, mode = sys.argv[1:]
spec = {
    "image": "ghcr.io/example/openfoam:11",
    "resources": {"cpu": "1", "memory": "1Gi"},
    "podTemplate": {"metadata": {"annotations": {"testbed.simtask.dev/duration": "8s"}}},
}
task = Task.submit(spec, name=name, namespace=namespace)
print("submitted", flush=True)
if mode == "sync":
    with task.sync_context():
        task.wait()
else:
    task.wait()
"""


def interrupt_while_waiting(namespace: str, name: str, mode: str) -> str:
    """Run SCRIPT, let its task start, Ctrl-C (SIGINT) it; return its stderr."""
    proc = python_script(SCRIPT, name, namespace, mode)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "submitted", proc.stderr and proc.stderr.read()
        wait_phase(namespace, name, "ComputationStarted")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=HEADROOM)
    except (AssertionError, subprocess.TimeoutExpired):
        proc.kill()
        raise
    assert proc.returncode != 0, "the script went on after Ctrl-C"
    assert "KeyboardInterrupt" in stderr, stderr
    return stderr


def test_ctrl_c_inside_sync_context_leaves_the_task_killed(namespace: str) -> None:
    interrupt_while_waiting(namespace, "synced", "sync")
    task = wait_phase(namespace, "synced", "Killed")
    assert task["spec"]["kill"] is True


def test_ctrl_c_in_a_plain_wait_leaves_the_task_running(namespace: str) -> None:
    interrupt_while_waiting(namespace, "detached", "plain")
    assert get(namespace, "detached")["spec"].get("kill") is not True
    # Still running, and it goes on to its end by itself.
    task = wait_phase(namespace, "detached", "Success", within=8)
    assert "Killed" not in history(task)
