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
None -> PendingInput, Held, Submitted
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


def test_kill_is_honoured_from_every_non_terminal_phase() -> None:
    for phase in Phase:
        if not is_terminal(phase, resubmission_follows=True) and phase not in (
            Phase.PENDING_KILLED,
        ):
            assert can_transition(phase, Phase.PENDING_KILLED), phase


def test_retry_restarts_every_terminal_phase_but_success() -> None:
    for phase in Phase:
        if is_terminal(phase):
            assert can_transition(phase, Phase.SUBMITTED) is (phase != Phase.SUCCESS), phase


@pytest.mark.parametrize(
    ("phase", "follows", "terminal"),
    [
        (Phase.SUCCESS, False, True),
        (Phase.FAILED, True, True),
        (Phase.SPOT_PREEMPTED, True, False),
        (Phase.SPOT_PREEMPTED, False, True),
        (Phase.EXECUTOR_TERMINATED, True, False),
        (Phase.EXECUTOR_TERMINATED, False, True),
        (Phase.COMPUTATION_STARTED, False, False),
        (Phase.PENDING_KILLED, False, False),
        (None, False, False),
    ],
)
def test_is_terminal(phase: Phase | None, follows: bool, terminal: bool) -> None:
    assert is_terminal(phase, resubmission_follows=follows) is terminal


def test_parse_phase() -> None:
    assert parse_phase("Success") is Phase.SUCCESS
    assert parse_phase("") is None
    assert parse_phase("Bogus") is None
    assert parse_phase(None) is None
