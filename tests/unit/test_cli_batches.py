"""The batch commands of kubectl simtask (SPEC §6 names) on sample objects, through a fake
of the SDK's connection: which object each command reads and writes, what it prints, and
its exit code. The real API server is exercised by tests/e2e."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from simtask.cli import main
from simtask.sdk.batch import Batch
from simtask.sdk.client import BATCHES, ConflictError, Kind, NotFoundError
from tests.unit.fixtures import task


def batch(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationBatch",
        "metadata": {
            "name": "sweep",
            "namespace": "research",
            "generation": 1,
            "resourceVersion": "7",
            "uid": "b-uid",
        },
        "spec": {"template": {"image": "x"}, "count": 4, "retry": 0},
        "status": {"phase": phase, "observedGeneration": 1, **status},
    }


class FakeCore:
    def __init__(self, log: str) -> None:
        self.log = log
        self.read: list[tuple[str, str, dict[str, Any]]] = []

    def read_namespaced_pod_log(self, pod: str, namespace: str, **kwargs: Any) -> str:
        self.read.append((pod, namespace, kwargs))
        return self.log


class FakeClient:
    """The SDK's Client, answering from a dict of objects; records patches."""

    def __init__(self, *objs: dict[str, Any], conflicts: int = 0) -> None:
        self.namespace = "research"
        self.objs = {(o["kind"], o["metadata"]["name"]): o for o in objs}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.conflicts = conflicts
        self.core = FakeCore("step 1\nstep 2\n")

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(self.objs[(kind.kind, name)]))
        except KeyError:
            raise NotFoundError(f"{kind.ref(name)} in namespace {namespace}: not found") from None

    def list(self, kind: Kind, namespace: str | None, **selectors: Any) -> dict[str, Any]:
        wanted = dict(
            part.split("=") for part in (selectors.get("label_selector") or "").split(",") if part
        )
        items = [
            o
            for (k, _), o in self.objs.items()
            if k == kind.kind
            and all(o["metadata"].get("labels", {}).get(a) == b for a, b in wanted.items())
        ]
        return {"items": items, "metadata": {"resourceVersion": "9"}}

    def patch(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            raise ConflictError("changed")
        self.patches.append((kind.kind, name, patch))
        return self.get(kind, namespace, name)


def run(fake: FakeClient, *args: str) -> Any:
    original = main.connect
    main.connect = lambda *a: fake  # type: ignore[assignment]
    try:
        return CliRunner().invoke(main.cli, list(args))
    finally:
        main.connect = original


def test_summary_of_a_batch() -> None:
    fake = FakeClient(
        batch(
            "Failed",
            instances={"total": 4, "pending": 0, "Success": 3, "Failed": 1},
            succeededIndexes="0-1,3",
            failedIndexes="2",
            cpuSeconds=120.0,
        )
    )
    result = run(fake, "summary", "sweep")
    assert result.exit_code == 0, result.output
    assert "simbatch/sweep" in result.output
    assert "4 total: 3 Success, 1 Failed" in result.output
    assert "failed indexes     2" in result.output
    data = json.loads(run(fake, "summary", "sb/sweep", "-o", "json").output)
    assert data["failed_indexes"] == "2" and data["counts"] == {"Success": 3, "Failed": 1}


@pytest.mark.parametrize(("phase", "code"), [("Success", 0), ("Failed", 1), ("Killed", 1)])
def test_wait_on_an_ended_batch_exits_as_spec_8_says(phase: str, code: int) -> None:
    fake = FakeClient(batch(phase, instances={"total": 4, "Success": 4}))
    result = run(fake, "wait", "simbatch/sweep")
    assert result.exit_code == code, result.output
    assert f"simbatch/sweep  {phase}  4 total: 4 Success" in result.output


def test_retry_of_a_batch_raises_its_counter_with_a_precondition_even_after_conflicts() -> None:
    fake = FakeClient(batch("Failed"), conflicts=2)
    result = run(fake, "retry", "sweep")
    assert result.exit_code == 0, result.output
    assert fake.patches == [
        (
            "SimulationBatch",
            "sweep",
            {"metadata": {"resourceVersion": "7"}, "spec": {"retry": 1}},
        )
    ]
    assert "simbatch/sweep retry requested (spec.retry=1)" in result.output


def test_kill_hold_release_of_a_batch() -> None:
    for verb, spec in (
        ("kill", {"kill": True}),
        ("hold", {"hold": True}),
        ("release", {"hold": False}),
    ):
        fake = FakeClient(batch("Running"))
        result = run(fake, verb, "simbatch/sweep")
        assert result.exit_code == 0, result.output
        assert fake.patches == [("SimulationBatch", "sweep", {"spec": spec})]


def test_logs_of_a_batch_instance_by_index() -> None:
    instance = task("sweep-2")
    instance["metadata"]["labels"] = {"simtask.dev/batch": "sweep", "simtask.dev/index": "2"}
    instance["metadata"]["ownerReferences"] = [{"kind": "SimulationBatch", "uid": "b-uid"}]
    instance["status"] = {"phase": "ComputationStarted", "attempt": 1, "podName": "sweep-2-a1-x"}
    fake = FakeClient(batch("Running"), instance)
    result = run(fake, "logs", "sweep", "--index", "2", "--tail", "5")
    assert result.exit_code == 0, result.output
    assert result.output == "step 1\nstep 2\n"
    assert fake.core.read == [
        ("sweep-2-a1-x", "research", {"container": "simulator", "tail_lines": 5})
    ]


def test_a_batchs_instances_are_the_tasks_it_owns() -> None:
    def instance(name: str, index: int, owner: str, phase: str) -> dict[str, Any]:
        obj = task(name)
        obj["metadata"]["labels"] = {"simtask.dev/batch": "sweep", "simtask.dev/index": str(index)}
        obj["metadata"]["ownerReferences"] = [{"kind": "SimulationBatch", "uid": owner}]
        obj["status"] = {"phase": phase}
        return obj

    fake = FakeClient(
        batch("Running"),
        instance("sweep-10", 10, "b-uid", "Failed"),
        instance("sweep-2", 2, "b-uid", "Success"),
        instance("sweep-3", 3, "b-uid", "Failed"),
        # A task of an older batch of the same name, left behind: not an instance of this one.
        instance("stale-3", 3, "old-uid", "Failed"),
    )
    sweep = Batch(fake.get(BATCHES, "research", "sweep"), client=fake)
    assert [t.name for t in sweep.tasks()] == ["sweep-2", "sweep-3", "sweep-10"]
    assert [t.name for t in sweep.tasks(phase="Failed")] == ["sweep-3", "sweep-10"]
    assert sweep.task(3).name == "sweep-3"


def test_logs_of_a_batch_needs_an_index_and_an_instance_that_exists() -> None:
    fake = FakeClient(batch("Running"))
    result = run(fake, "logs", "sweep")
    assert result.exit_code == 2 and "--index" in result.output
    result = run(fake, "logs", "sweep", "--index", "9")
    assert result.exit_code == 2 and "no task for index 9" in result.output


def test_a_name_that_is_neither_task_nor_batch() -> None:
    result = run(FakeClient(), "kill", "ghost")
    assert result.exit_code == 2
    assert "no SimulationTask or SimulationBatch named 'ghost'" in result.output
