"""What kubectl simtask prints and the exit codes it returns, on sample objects."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from rich.console import Console

from simtask.cli import format as fmt
from simtask.sdk.batch import BatchSummary
from simtask.sdk.outcome import Change, batch_change, task_changes
from simtask.sdk.queue import queue_order
from tests.unit.fixtures import at, task, ts


def render(*parts: Any) -> str:
    console = Console(width=200, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    for part in parts:
        console.print(part)
    return console.export_text()


def failed_task() -> dict[str, Any]:
    obj = task()
    obj["status"] = {
        "phase": "Failed",
        "attempt": 2,
        "resubmissions": 1,
        "startTime": ts(0),
        "completionTime": ts(200),
        "duration": "3m20s",
        "history": [
            {"phase": "Submitted", "time": ts(0), "reason": "Submitted", "attempt": 1},
            {"phase": "Started", "time": ts(5), "reason": "PodBound", "attempt": 1},
            {
                "phase": "SpotPreempted",
                "time": ts(65),
                "reason": "NodeTainted",
                "message": "node cpu-spot-1 was reclaimed",
                "attempt": 1,
            },
            {"phase": "Submitted", "time": ts(67), "reason": "Resubmitted", "attempt": 2},
            {"phase": "Started", "time": ts(70), "reason": "PodBound", "attempt": 2},
            {
                "phase": "Failed",
                "time": ts(200),
                "reason": "NonZeroExit",
                "message": "the simulator exited with code 3",
                "attempt": 2,
            },
        ],
        "attempts": [
            {
                "attempt": 1,
                "jobName": "cfd-wing-a1",
                "nodeName": "cpu-spot-1",
                "machineGroup": "cpu-spot",
                "spot": True,
                "phase": "SpotPreempted",
                "startTime": ts(5),
                "endTime": ts(65),
                "cpuSeconds": 240.0,
                "gpuSeconds": 0.0,
            },
            {
                "attempt": 2,
                "jobName": "cfd-wing-a2",
                "nodeName": "cpu-standard-0",
                "machineGroup": "cpu-standard",
                "phase": "Failed",
                "exitCode": 3,
                "startTime": ts(70),
                "endTime": ts(200),
                "cpuSeconds": 520.0,
                "gpuSeconds": 0.0,
            },
        ],
    }
    return obj


# --- exit codes (SPEC §8) --------------------------------------------------------------


def test_exit_code_is_0_when_all_succeed() -> None:
    assert fmt.exit_code(["Success", "Success"]) == 0


def test_exit_code_is_1_when_one_ends_in_anything_but_success() -> None:
    for ending in ("Failed", "Killed", "TTLExceeded", "SpotPreempted", "Zombie", "Deleted"):
        assert fmt.exit_code(["Success", ending]) == 1, ending


def test_exit_code_is_124_on_timeout_whatever_ended() -> None:
    assert fmt.exit_code(["Success"], timed_out=True) == 124
    assert fmt.exit_code(["Failed"], timed_out=True) == 124


# --- status change lines ---------------------------------------------------------------


def test_a_task_change_line_has_time_name_phase_attempt_and_why() -> None:
    change = task_changes(failed_task(), 5)[0]
    line = fmt.change_line(change, UTC).plain
    assert line == (
        "10:03:20  simtask/cfd-wing  Failed  attempt 2  "
        "NonZeroExit: the simulator exited with code 3"
    )


def test_a_batch_change_line_counts_its_instances() -> None:
    obj = {
        "kind": "SimulationBatch",
        "metadata": {"name": "sweep"},
        "status": {
            "phase": "Running",
            "instances": {"total": 10, "pending": 4, "Success": 5, "Failed": 1, "Held": 0},
        },
    }
    line = fmt.change_line(batch_change(obj, at(30)), UTC).plain
    assert line == "10:00:30  simbatch/sweep  Running  10 total: 4 pending, 5 Success, 1 Failed"


def test_change_line_without_reason_or_attempt() -> None:
    change = Change(kind="SimulationTask", name="x", time=at(1), phase="Submitted")
    assert fmt.change_line(change, UTC).plain == "10:00:01  simtask/x  Submitted"


# --- history ---------------------------------------------------------------------------


def test_history_rows_say_how_long_each_phase_lasted() -> None:
    rows = fmt.history_rows(failed_task(), tz=UTC)
    assert [r[2] for r in rows] == [
        "Submitted",
        "Started",
        "SpotPreempted",
        "Submitted",
        "Started",
        "Failed",
    ]
    assert [r[3] for r in rows] == ["5s", "1m", "2s", "3s", "2m10s", ""]
    assert rows[2] == (
        "2024-05-01 10:01:05",
        "1",
        "SpotPreempted",
        "2s",
        "NodeTainted",
        "node cpu-spot-1 was reclaimed",
    )


def test_the_last_phase_of_a_running_task_lasts_until_now() -> None:
    obj = failed_task()
    obj["status"]["history"] = obj["status"]["history"][:2]
    del obj["status"]["completionTime"]
    rows = fmt.history_rows(obj, now=at(65), tz=UTC)
    assert rows[-1][3] == "1m"


def test_attempt_rows_and_compute_totals() -> None:
    rows = fmt.attempt_rows(failed_task(), tz=UTC)
    assert rows == [
        (
            "1",
            "SpotPreempted",
            "cpu-spot-1",
            "cpu-spot (spot)",
            "2024-05-01 10:00:05",
            "1m",
            "-",
            "240",
            "0",
        ),
        (
            "2",
            "Failed",
            "cpu-standard-0",
            "cpu-standard",
            "2024-05-01 10:01:10",
            "2m10s",
            "3",
            "520",
            "0",
        ),
    ]
    assert fmt.compute_totals(failed_task()) == (760.0, 0.0, 240.0)


def test_history_view_reads_at_a_glance() -> None:
    text = render(*fmt.history_tables(failed_task(), now=at(300), tz=UTC))
    assert "simtask/cfd-wing  Failed  attempt 2, 1 resubmission(s), ran 3m20s" in text
    assert "NonZeroExit" in text
    assert "compute: 760 CPU-s, 0 GPU-s (240 CPU-s lost to preemption)" in text


# --- batch summary ---------------------------------------------------------------------


def sample_batch() -> dict[str, Any]:
    return {
        "kind": "SimulationBatch",
        "metadata": {"name": "sweep", "namespace": "research", "generation": 2},
        "status": {
            "phase": "Failed",
            "observedGeneration": 2,
            "instances": {"total": 300, "pending": 0, "Success": 297, "Failed": 3},
            "succeededIndexes": "0-99,103-299",
            "failedIndexes": "100-102",
            "resubmissions": 4,
            "cpuSeconds": 36000.4,
            "gpuSeconds": 0,
            "startTime": ts(0),
            "completionTime": ts(3600),
        },
    }


def test_summary_of_a_batch() -> None:
    summary = BatchSummary.of(sample_batch())
    assert summary.total == 300
    assert summary.counts == {"Success": 297, "Failed": 3}
    rows = dict(fmt.summary_rows(summary))
    assert rows["instances"] == "300 total: 297 Success, 3 Failed"
    assert rows["failed indexes"] == "100-102"
    assert rows["succeeded indexes"] == "0-99,103-299"
    assert rows["compute"] == "36000 CPU-s, 0 GPU-s"
    assert rows["ran"] == "1h"


def test_summary_of_a_batch_without_status_yet() -> None:
    summary = BatchSummary.of({"metadata": {"name": "new"}})
    rows = dict(fmt.summary_rows(summary))
    assert (summary.phase, summary.total) == ("Pending", 0)
    assert rows["failed indexes"] == "-" and rows["ran"] == "-"


# --- queue -----------------------------------------------------------------------------


def queued(name: str, group: str, position: int, namespace: str = "a") -> dict[str, Any]:
    obj = task(name, machineGroup=group)
    obj["metadata"]["namespace"] = namespace
    obj["status"] = {
        "phase": "Submitted",
        "queuePosition": position,
        "machineGroup": group,
        "history": [{"phase": "Submitted", "time": ts(0), "attempt": 1}],
    }
    return obj


def test_queue_lists_waiting_tasks_by_group_then_position() -> None:
    running = task("running", machineGroup="gpu")
    running["status"] = {"phase": "ComputationStarted", "machineGroup": "gpu"}
    objs = [
        queued("c", "gpu", 3),
        running,
        queued("a", "gpu", 1, "b"),
        queued("z", "cpu", 1),
        queued("b", "gpu", 2),
    ]
    assert [o["metadata"]["name"] for o in queue_order(objs)] == ["z", "a", "b", "c"]
    assert [o["metadata"]["name"] for o in queue_order(objs, "gpu")] == ["a", "b", "c"]
    rows = fmt.queue_rows(queue_order(objs, "gpu"), now=at(90))
    assert rows[0] == ("gpu", "1", "b", "a", "1m30s")
