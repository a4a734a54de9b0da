"""The SDK's pure parts: when a task has ended, which log belongs to an attempt, the reader
pod, what a wait reports; and the CLI's answers to bad input."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from simtask import names
from simtask.cli.main import cli
from simtask.sdk import logs
from simtask.sdk.client import BATCHES, TASKS
from simtask.sdk.operations import retry_patch
from simtask.sdk.outcome import Change, batch_final_phase, task_changes, task_final_phase
from simtask.sdk.outputs import READER_LABELS, exec_status, reader_pod
from simtask.sdk.waiting import Ref, _Tracker
from tests.unit.fixtures import task, ts


def ended(phase: str, *, failed: bool, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    obj = task()
    obj["metadata"]["generation"] = generation
    obj["status"] = {
        "phase": phase,
        "observedGeneration": observed,
        "conditions": [
            {"type": "Succeeded", "status": "False" if failed else "True", "reason": phase},
            {"type": "Failed", "status": "True" if failed else "False", "reason": phase},
        ],
    }
    return obj


# --- has it ended? ---------------------------------------------------------------------


def test_a_task_ends_with_its_succeeded_or_failed_condition() -> None:
    assert task_final_phase(ended("Success", failed=False)) == "Success"
    assert task_final_phase(ended("Failed", failed=True)) == "Failed"


def test_a_task_without_those_conditions_has_not_ended() -> None:
    running = task()
    running["status"] = {"phase": "SpotPreempted", "observedGeneration": 1, "conditions": []}
    assert task_final_phase(running) is None  # a resubmission follows


def test_a_task_whose_new_spec_the_operator_has_not_seen_has_not_ended() -> None:
    # Just retried: the old Failed is still there, but generation 2 is not observed yet.
    assert task_final_phase(ended("Failed", failed=True, generation=2, observed=1)) is None


def test_a_batch_ends_in_success_failed_or_killed() -> None:
    def batch(phase: str, observed: int = 1) -> dict[str, Any]:
        return {
            "metadata": {"generation": 1},
            "status": {"phase": phase, "observedGeneration": observed},
        }

    assert batch_final_phase(batch("Success")) == "Success"
    assert batch_final_phase(batch("Killed")) == "Killed"
    assert batch_final_phase(batch("Running")) is None
    assert batch_final_phase(batch("Failed", observed=0)) is None


def test_task_changes_start_after_those_seen() -> None:
    obj = task()
    obj["status"]["history"] = [
        {"phase": "Submitted", "time": ts(0), "attempt": 1},
        {"phase": "Started", "time": ts(3), "reason": "PodBound", "attempt": 1},
    ]
    changes = task_changes(obj, 1)
    assert [(c.phase, c.reason, c.attempt) for c in changes] == [("Started", "PodBound", 1)]


def test_a_wait_reports_each_change_once_from_the_current_phase_on() -> None:
    seen: list[Change] = []
    tracker = _Tracker(seen.append, from_start=False)
    ref = Ref(TASKS, "research", "cfd-wing")
    obj = task()
    obj["status"]["history"] = [
        {"phase": "Submitted", "time": ts(0), "attempt": 1},
        {"phase": "Started", "time": ts(3), "attempt": 1},
    ]
    tracker.see(ref, obj)
    tracker.see(ref, obj)  # the same version again (a relist): nothing new
    obj["status"]["history"].append({"phase": "ComputationStarted", "time": ts(4), "attempt": 1})
    tracker.see(ref, obj)
    assert [c.phase for c in seen] == ["Started", "ComputationStarted"]


def test_a_wait_from_the_start_reports_the_whole_history() -> None:
    seen: list[Change] = []
    tracker = _Tracker(seen.append, from_start=True)
    obj = task()
    obj["status"]["history"] = [
        {"phase": "Submitted", "time": ts(0), "attempt": 1},
        {"phase": "Started", "time": ts(3), "attempt": 1},
    ]
    tracker.see(Ref(TASKS, "research", "cfd-wing"), obj)
    assert [c.phase for c in seen] == ["Submitted", "Started"]


def test_a_batch_change_is_reported_when_its_phase_or_counts_move() -> None:
    seen: list[Change] = []
    tracker = _Tracker(seen.append, from_start=False)
    ref = Ref(BATCHES, "research", "sweep")
    obj: dict[str, Any] = {
        "kind": "SimulationBatch",
        "metadata": {"name": "sweep"},
        "status": {"phase": "Running", "instances": {"total": 2, "pending": 2}},
    }
    tracker.see(ref, obj)
    tracker.see(ref, obj)
    obj["status"]["instances"] = {"total": 2, "pending": 1, "Submitted": 1}
    tracker.see(ref, obj)
    assert [c.counts for c in seen] == [
        (("total", 2), ("pending", 2)),
        (("total", 2), ("pending", 1), ("Submitted", 1)),
    ]


# --- retry ---------------------------------------------------------------------------


def test_retry_raises_the_counter_from_what_it_read_with_that_version_as_precondition() -> None:
    obj = task(retry=2)
    assert retry_patch(obj) == {"metadata": {"resourceVersion": "48213"}, "spec": {"retry": 3}}
    assert retry_patch(task())["spec"] == {"retry": 1}


def test_retrying_a_killed_task_takes_the_kill_back_in_the_same_write() -> None:
    assert retry_patch(task(kill=True, retry=1))["spec"] == {"retry": 2, "kill": False}


# --- logs ------------------------------------------------------------------------------


def test_the_kept_log_of_an_attempt_is_named_after_its_job() -> None:
    obj = task()
    obj["status"] = {"attempt": 3, "attempts": [{"attempt": 1, "jobName": "cfd-wing-a1"}]}
    assert logs.kept_log_name(obj, 1) == "cfd-wing-a1-log"
    # No record (yet): the operator's deterministic Job name.
    assert logs.kept_log_name(obj, 2) == names.job_name("cfd-wing", 2) + "-log"
    long = task("x" * 63)
    assert logs.kept_log_name(long, 1) == names.job_name("x" * 63, 1) + "-log"


def test_tail_lines() -> None:
    text = "a\nb\nc\n"
    assert logs.tail_lines(text, None) == text
    assert logs.tail_lines(text, 2) == "b\nc\n"
    assert logs.tail_lines(text, 0) == ""
    assert logs.tail_lines(text, 10) == text


# --- the reader pod of outputs -----------------------------------------------------------


def test_the_reader_pod_mounts_the_claim_read_only_and_is_not_a_task_pod() -> None:
    obj = task(outputs={"persistentVolumeClaim": "results"})
    obj["status"] = {"phase": "Success", "nodeName": "cpu-standard-0"}
    pod = reader_pod(obj, "results", image="busybox:1.36", lifetime=600)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert spec["volumes"] == [
        {"name": "outputs", "persistentVolumeClaim": {"claimName": "results", "readOnly": True}}
    ]
    assert container["volumeMounts"][0]["readOnly"] is True
    assert container["workingDir"] == "/outputs"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["activeDeadlineSeconds"] == 600
    # The operator selects its pods on the task-uid label: a reader must never carry it.
    assert names.LABEL_TASK_UID not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"] == READER_LABELS
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "SimulationTask",
        "cfd-wing",
        False,
    )
    assert "affinity" not in spec  # the task ended: any node will do


def test_the_reader_of_a_running_task_goes_to_its_node() -> None:
    obj = task(outputs={"persistentVolumeClaim": "results"})
    obj["status"] = {"phase": "ComputationStarted", "nodeName": "cpu-standard-2"}
    terms = reader_pod(obj, "results")["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["cpu-standard-2"]}]}
    ]


def test_the_exit_status_of_tar_in_the_reader() -> None:
    assert exec_status("") == (0, "")
    assert exec_status('{"metadata":{},"status":"Success"}') == (0, "")
    failed = (
        '{"status":"Failure","message":"command terminated with non-zero exit code",'
        '"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}'
    )
    assert exec_status(failed) == (2, "command terminated with non-zero exit code")
    refused = r'{"status":"Failure","message":"container not found (\"reader\")"}'
    assert exec_status(refused) == (1, 'container not found ("reader")')


# --- the CLI's answers to bad input: a message and exit 2, never a traceback --------------


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_an_unreadable_manifest_is_an_error_not_a_traceback(tmp_path: Any) -> None:
    result = run("submit", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "cannot read" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    result = run("submit", str(bad))
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert "Traceback" not in result.output


def test_a_missing_kubeconfig_is_an_error_not_a_traceback(tmp_path: Any) -> None:
    result = run("wait", "x", "--kubeconfig", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "kubeconfig" in result.output
    assert "Traceback" not in result.output


def test_a_bad_timeout_is_a_usage_error() -> None:
    result = run("wait", "x", "--timeout", "soon")
    assert result.exit_code == 2 and "--timeout" in result.output


def test_every_command_of_spec_8_has_help_with_an_example() -> None:
    for command in ("submit", "wait", "logs", "outputs", "kill", "hold", "release", "retry",
                    "history", "queue", "summary"):  # fmt: skip
        result = run(command, "--help")
        assert result.exit_code == 0, command
        assert "kubectl simtask " + command in result.output, command
