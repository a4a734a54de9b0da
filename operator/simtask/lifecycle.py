"""The SimulationTask lifecycle: every phase and every allowed move, kept as data in one place."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Phase(StrEnum):
    """The values of `status.phase` (SPEC §3)."""

    PENDING_INPUT = "PendingInput"
    HELD = "Held"
    SUBMITTED = "Submitted"
    STARTED = "Started"
    COMPUTATION_STARTED = "ComputationStarted"
    COMPUTATION_ENDED = "ComputationEnded"
    SUCCESS = "Success"
    FAILED = "Failed"
    PENDING_KILLED = "PendingKilled"
    KILLED = "Killed"
    ZOMBIE = "Zombie"
    SPOT_PREEMPTED = "SpotPreempted"
    EXECUTOR_TERMINATED = "ExecutorTerminated"
    EXECUTOR_TERMINATED_BY_USER = "ExecutorTerminatedByUser"
    EXECUTOR_TERMINATED_TTL_EXCEEDED = "ExecutorTerminatedTTLExceeded"
    EXECUTOR_FAILED = "ExecutorFailed"
    TTL_EXCEEDED = "TTLExceeded"


P = Phase

#: Phases an attempt can be lost in through no fault of the simulator; they lead to a
#: resubmission while the budget allows, and are terminal otherwise.
PREEMPTED: frozenset[Phase] = frozenset({P.SPOT_PREEMPTED, P.EXECUTOR_TERMINATED})

#: Phases that always end a task (until the user raises `spec.retry`).
ALWAYS_TERMINAL: frozenset[Phase] = frozenset(
    {
        P.SUCCESS,
        P.FAILED,
        P.KILLED,
        P.ZOMBIE,
        P.EXECUTOR_TERMINATED_BY_USER,
        P.EXECUTOR_TERMINATED_TTL_EXCEEDED,
        P.EXECUTOR_FAILED,
        P.TTL_EXCEEDED,
    }
)

#: Phases in which the task has a pod bound to a node.
RUNNING: frozenset[Phase] = frozenset({P.STARTED, P.COMPUTATION_STARTED, P.COMPUTATION_ENDED})

#: Phases before the task started: hold and release apply only here.
NOT_STARTED: frozenset[Phase] = frozenset({P.PENDING_INPUT, P.HELD, P.SUBMITTED})

#: How an attempt that had a pod on a node can end.
_ATTEMPT_ENDINGS = frozenset(
    {
        P.FAILED,
        P.EXECUTOR_FAILED,
        P.SPOT_PREEMPTED,
        P.EXECUTOR_TERMINATED,
        P.EXECUTOR_TERMINATED_BY_USER,
        P.EXECUTOR_TERMINATED_TTL_EXCEEDED,
        P.TTL_EXCEEDED,
        P.PENDING_KILLED,
    }
)

#: Where a new attempt (retry or resubmission) or a released hold begins.
_NEW_ATTEMPT = frozenset({P.PENDING_INPUT, P.HELD, P.SUBMITTED})

#: The transition table: phase -> the phases it may move to. A task with no phase yet
#: is keyed by None. Anything not listed here is refused.
TRANSITIONS: Mapping[Phase | None, frozenset[Phase]] = {
    # A task created with spec.kill already true is killed before it ever starts.
    None: frozenset({P.PENDING_INPUT, P.HELD, P.SUBMITTED, P.PENDING_KILLED}),
    P.PENDING_INPUT: frozenset({P.HELD, P.SUBMITTED, P.PENDING_KILLED, P.ZOMBIE}),
    P.HELD: frozenset({P.PENDING_INPUT, P.SUBMITTED, P.PENDING_KILLED, P.ZOMBIE}),
    # Failed from Submitted: the executor could never be created (rejected Job, bad spec).
    P.SUBMITTED: frozenset(
        {P.PENDING_INPUT, P.HELD, P.STARTED, P.FAILED, P.PENDING_KILLED, P.ZOMBIE}
    ),
    P.STARTED: _ATTEMPT_ENDINGS | {P.COMPUTATION_STARTED},
    P.COMPUTATION_STARTED: _ATTEMPT_ENDINGS | {P.COMPUTATION_ENDED},
    # The simulator already exited 0, so a non-zero simulator exit cannot follow.
    P.COMPUTATION_ENDED: (_ATTEMPT_ENDINGS - {P.FAILED}) | {P.SUCCESS},
    P.PENDING_KILLED: frozenset({P.KILLED}),
    P.SUCCESS: frozenset(),
    P.FAILED: _NEW_ATTEMPT,
    P.KILLED: _NEW_ATTEMPT,
    P.ZOMBIE: _NEW_ATTEMPT,
    P.EXECUTOR_TERMINATED_BY_USER: _NEW_ATTEMPT,
    P.EXECUTOR_TERMINATED_TTL_EXCEEDED: _NEW_ATTEMPT,
    P.EXECUTOR_FAILED: _NEW_ATTEMPT,
    P.TTL_EXCEEDED: _NEW_ATTEMPT,
    # Waiting for a resubmission (or terminal when none follows): a kill is still
    # honoured, and the group can vanish before the next attempt starts.
    P.SPOT_PREEMPTED: _NEW_ATTEMPT | {P.PENDING_KILLED, P.ZOMBIE},
    P.EXECUTOR_TERMINATED: _NEW_ATTEMPT | {P.PENDING_KILLED, P.ZOMBIE},
}


class TransitionRefused(ValueError):
    """Raised when a move is not in the transition table."""


def can_transition(current: Phase | None, target: Phase) -> bool:
    """Whether the table allows moving from `current` (None: no phase yet) to `target`."""
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(current: Phase | None, target: Phase) -> None:
    """Raise TransitionRefused unless the table allows the move."""
    if not can_transition(current, target):
        raise TransitionRefused(f"transition {current} -> {target} is not allowed")


def is_terminal(phase: Phase | None, *, resubmission_follows: bool = False) -> bool:
    """Whether `phase` ends the task; a preemption is terminal only when no resubmission follows."""
    if phase is None:
        return False
    if phase in PREEMPTED:
        return not resubmission_follows
    return phase in ALWAYS_TERMINAL


def parse_phase(value: object) -> Phase | None:
    """The Phase for a status value; None for an absent or unknown one."""
    try:
        return Phase(str(value)) if value else None
    except ValueError:
        return None
