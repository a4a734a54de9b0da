"""The transition table, cell by cell: every allowed and every forbidden move (SPEC §3)."""

from __future__ import annotations

import itertools

import pytest

from simtask.lifecycle import (
    TRANSITIONS,
    Phase,
    TransitionRefused,
    can_transition,
    check_transition,
    is_terminal,
    parse_phase,
)

# The contract written out a second time, by hand, as "from -> to" lines.
ALLOWED_TEXT = """
None -> PendingInput, Held, Submitted, PendingKilled
PendingInput -> Held, Submitted, PendingKilled, Zombie
Held -> PendingInput, Submitted, PendingKilled, Zombie
Submitted -> PendingInput, Held, Started, Failed, PendingKilled, Zombie
Started -> ComputationStarted, Failed, ExecutorFailed, SpotPreempted, ExecutorTerminated, ExecutorTerminatedByUser, ExecutorTerminatedTTLExceeded, TTLExceeded, PendingKilled
ComputationStarted -> ComputationEnded, Failed, ExecutorFailed, SpotPreempted, ExecutorTerminated, ExecutorTerminatedByUser, ExecutorTerminatedTTLExceeded, TTLExceeded, PendingKilled
ComputationEnded -> Success, ExecutorFailed, SpotPreempted, ExecutorTerminated, ExecutorTerminatedByUser, ExecutorTerminatedTTLExceeded, TTLExceeded, PendingKilled
PendingKilled -> Killed
Success ->
Failed -> PendingInput, Held, Submitted
Killed -> PendingInput, Held, Submitted
Zombie -> PendingInput, Held, Submitted
ExecutorTerminatedByUser -> PendingInput, Held, Submitted
ExecutorTerminatedTTLExceeded -> PendingInput, Held, Submitted
ExecutorFailed -> PendingInput, Held, Submitted
TTLExceeded -> PendingInput, Held, Submitted
SpotPreempted -> PendingInput, Held, Submitted, PendingKilled, Zombie
ExecutorTerminated -> PendingInput, Held, Submitted, PendingKilled, Zombie
"""


def _allowed() -> set[tuple[Phase | None, Phase]]:
    pairs = set()
    for line in ALLOWED_TEXT.strip().splitlines():
        src, _, dsts = line.partition("->")
        source = None if src.strip() == "None" else Phase(src.strip())
        for dst in filter(None, (d.strip() for d in dsts.split(","))):
            pairs.add((source, Phase(dst)))
    return pairs


ALLOWED = _allowed()
SOURCES: list[Phase | None] = [None, *Phase]
CELLS = list(itertools.product(SOURCES, Phase))


def test_table_has_a_row_for_every_phase() -> None:
    assert set(TRANSITIONS) == set(SOURCES)


@pytest.mark.parametrize(("source", "target"), CELLS, ids=[f"{s}->{t}" for s, t in CELLS])
def test_cell(source: Phase | None, target: Phase) -> None:
    expected = (source, target) in ALLOWED
    assert can_transition(source, target) is expected
    if expected:
        check_transition(source, target)
    else:
        with pytest.raises(TransitionRefused):
            check_transition(source, target)


# SPEC §3 written out by hand, independently of is_terminal() and the table: the phases a
# task ends in, the preemptions that end it only when no resubmission follows, and the rest.
ALWAYS_TERMINAL = {
    Phase.SUCCESS,
    Phase.FAILED,
    Phase.KILLED,
    Phase.ZOMBIE,
    Phase.EXECUTOR_TERMINATED_BY_USER,
    Phase.EXECUTOR_TERMINATED_TTL_EXCEEDED,
    Phase.EXECUTOR_FAILED,
    Phase.TTL_EXCEEDED,
}
TERMINAL_UNLESS_RESUBMITTED = {Phase.SPOT_PREEMPTED, Phase.EXECUTOR_TERMINATED}
NEVER_TERMINAL = {
    Phase.PENDING_INPUT,
    Phase.HELD,
    Phase.SUBMITTED,
    Phase.STARTED,
    Phase.COMPUTATION_STARTED,
    Phase.COMPUTATION_ENDED,
    Phase.PENDING_KILLED,
}


def test_hand_written_phase_lists_cover_every_phase_once() -> None:
    lists = [ALWAYS_TERMINAL, TERMINAL_UNLESS_RESUBMITTED, NEVER_TERMINAL]
    assert sorted(p for group in lists for p in group) == sorted(Phase)


# Non-terminal, so a kill is honoured: everything but a kill in progress, and a preemption
# waiting for its resubmission.
KILLABLE = sorted((NEVER_TERMINAL - {Phase.PENDING_KILLED}) | TERMINAL_UNLESS_RESUBMITTED)


@pytest.mark.parametrize("phase", KILLABLE)
def test_kill_is_honoured_from_every_non_terminal_phase(phase: Phase) -> None:
    assert can_transition(phase, Phase.PENDING_KILLED)


@pytest.mark.parametrize("phase", sorted(ALWAYS_TERMINAL))
def test_kill_is_refused_once_terminal(phase: Phase) -> None:
    assert not can_transition(phase, Phase.PENDING_KILLED)


@pytest.mark.parametrize("phase", sorted(ALWAYS_TERMINAL | TERMINAL_UNLESS_RESUBMITTED))
def test_retry_restarts_every_terminal_phase_but_success(phase: Phase) -> None:
    assert can_transition(phase, Phase.SUBMITTED) is (phase != Phase.SUCCESS)


@pytest.mark.parametrize("follows", [False, True], ids=["final", "resubmission-follows"])
@pytest.mark.parametrize("phase", [None, *Phase])
def test_is_terminal(phase: Phase | None, follows: bool) -> None:
    expected = phase in ALWAYS_TERMINAL or (phase in TERMINAL_UNLESS_RESUBMITTED and not follows)
    assert is_terminal(phase, resubmission_follows=follows) is expected


def test_parse_phase() -> None:
    assert parse_phase("Success") is Phase.SUCCESS
    assert parse_phase("") is None
    assert parse_phase("Bogus") is None
    assert parse_phase(None) is None
