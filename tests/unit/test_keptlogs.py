"""Kept logs (SPEC §7): when an attempt keeps its log, how the tail is cut, its ConfigMap."""

from __future__ import annotations

import json

import pytest

from simtask import names
from simtask.keptlogs import (
    ANNOTATION_TRUNCATED,
    MAX_LOG_BYTES,
    build_log_configmap,
    log_configmap_name,
    log_tail,
    should_keep,
)
from simtask.lifecycle import Phase
from tests.unit.fixtures import NAMESPACE, TASK_NAME, TASK_UID, task


@pytest.mark.parametrize("phase", list(Phase))
def test_on_failure_keeps_every_ending_but_success(phase: Phase) -> None:
    assert should_keep("OnFailure", phase) is (phase != Phase.SUCCESS)
    assert should_keep(None, phase) is (phase != Phase.SUCCESS)  # the default
    assert should_keep("Always", phase) is True
    assert should_keep("Never", phase) is False


def test_a_short_log_is_kept_whole() -> None:
    assert log_tail(b"step 1\nstep 2\n") == ("step 1\nstep 2\n", False)
    assert log_tail(b"") == ("", False)
    assert log_tail(b"x" * 10, limit=10) == ("x" * 10, False)


def test_a_long_log_keeps_its_last_whole_lines_within_the_limit() -> None:
    lines = [f"iteration {i:05d} residual 1e-{i % 9}\n".encode() for i in range(20_000)]
    text, truncated = log_tail(b"".join(lines))
    assert truncated
    assert len(text.encode()) <= MAX_LOG_BYTES
    assert text.endswith("iteration 19999 residual 1e-1\n")
    assert text.startswith("iteration ")  # a whole line, not the end of one
    kept = text.splitlines(keepends=True)
    assert [line.encode() for line in kept] == lines[-len(kept) :]
    assert len(text.encode()) > MAX_LOG_BYTES - len(lines[0])  # no more dropped than needed


def test_the_cut_starts_on_a_line_boundary_when_the_limit_falls_on_one() -> None:
    assert log_tail(b"aaaa\nbbbb\n", limit=5) == ("bbbb\n", True)
    assert log_tail(b"aaaa\nbbbb\ncc\n", limit=8) == ("bbbb\ncc\n", True)
    assert log_tail(b"aaaa\nbbbb\ncc\n", limit=7) == ("cc\n", True)


def test_a_last_line_longer_than_the_limit_keeps_its_end() -> None:
    assert log_tail(b"first\n" + b"0123456789" * 3, limit=8) == ("23456789", True)


def test_never_more_than_the_limit_even_when_bytes_are_not_utf8() -> None:
    # Each invalid byte becomes U+FFFD, three bytes: the result is cut again.
    text, truncated = log_tail(b"\xff" * 100, limit=30)
    assert truncated and len(text.encode()) <= 30 and set(text) == {"\ufffd"}
    # A cut never starts inside a character.
    text, truncated = log_tail("résumé\n".encode() * 10 + "ééééé".encode(), limit=9)
    assert truncated and text == "éééé" and "\ufffd" not in text


def test_the_configmap_is_owned_by_the_task_labelled_and_immutable() -> None:
    cm = build_log_configmap(task(), 2, f"{TASK_NAME}-a2", "solver diverged\n", False)
    assert cm["metadata"]["name"] == f"{TASK_NAME}-a2-log" == log_configmap_name(f"{TASK_NAME}-a2")
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"] == {
        names.LABEL_TASK: TASK_NAME,
        names.LABEL_TASK_UID: TASK_UID,
        names.LABEL_ATTEMPT: "2",
        "app.kubernetes.io/managed-by": "simtask-operator",
    }
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "simtask.dev/v1alpha1",
            "kind": "SimulationTask",
            "name": TASK_NAME,
            "uid": TASK_UID,
            "controller": False,
        }
    ]
    assert ANNOTATION_TRUNCATED not in cm["metadata"]["annotations"]
    assert cm["data"] == {"log": "solver diverged\n"} and cm["immutable"] is True
    json.dumps(cm)


def test_a_cut_log_says_so_and_a_long_task_name_is_no_label() -> None:
    long_name = "a" * 70
    cm = build_log_configmap(task(name=long_name), 1, "job-a1", "tail\n", True)
    assert cm["metadata"]["annotations"][ANNOTATION_TRUNCATED] == "true"
    assert names.LABEL_TASK not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"][names.ANNOTATION_TASK_NAME] == long_name
