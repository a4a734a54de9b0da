"""What one attempt shows: each row of the design's "Phases from what the cluster shows"."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from simtask.lifecycle import Phase, can_transition
from simtask.podstate import (
    AttemptObservation,
    Step,
    compute_seconds,
    missing_secret_inputs,
    observe_attempt,
    parse_quantity,
    pick_pod,
    waiting_to_mount,
)
from tests.unit.fixtures import (
    IMAGE,
    at,
    disruption_target,
    job,
    job_complete,
    job_failed,
    node,
    pending_pod,
    pod,
    running,
    taint,
    terminated,
    ts,
    waiting,
)

P = Phase
NODE = "cpu-standard-1"
SPOT = "cpu-spot-2"


def phases(view: AttemptObservation) -> list[Phase]:
    return [step.phase for step in view.steps]


def assert_legal_chain(view: AttemptObservation) -> None:
    """The steps are a path the lifecycle table allows, starting from Submitted."""
    current = P.SUBMITTED
    for step in view.steps:
        assert can_transition(current, step.phase), f"{current} -> {step.phase} in {phases(view)}"
        current = step.phase


# --- nothing to see yet ----------------------------------------------------------------


def test_no_job_no_pod() -> None:
    view = observe_attempt(None, [], None, spot=False)
    assert view == AttemptObservation()
    assert view.last is None
    assert not view.ended


def test_job_without_pod_yet() -> None:
    view = observe_attempt(job(), [], None, spot=False)
    assert view.steps == ()
    assert view.job_name == "cfd-wing-a1"
    assert not view.ended and not view.delete_job


def test_suspended_job() -> None:
    view = observe_attempt(job(suspend=True), [], None, spot=False)
    assert view.steps == ()
    assert not view.ended


def test_suspended_job_ignores_the_pod_it_deletes() -> None:
    # Suspending deletes the Job's pods: the operator's doing, not a disruption.
    view = observe_attempt(job(suspend=True), [pending_pod() | _deleting()], None, spot=False)
    assert view.steps == ()
    assert not view.ended


def _deleting() -> dict[str, Any]:
    base = pending_pod()
    base["metadata"]["deletionTimestamp"] = ts(40)
    base["metadata"]["deletionGracePeriodSeconds"] = 30
    return base


def test_unschedulable_pod_says_why() -> None:
    message = (
        "0/8 nodes are available: 3 Insufficient nvidia.com/gpu, "
        "5 node(s) didn't match Pod's node affinity/selector. preemption: 0/8 nodes are "
        "available: 8 Preemption is not helpful for scheduling."
    )
    view = observe_attempt(job(active=1), [pending_pod(unschedulable=message)], None, spot=False)
    assert view.steps == ()
    assert view.unschedulable_message == message
    assert view.pod_name == "cfd-wing-a1-x7k2p"
    assert view.node_name is None
    assert not view.ended


def test_pending_pod_not_yet_seen_by_scheduler() -> None:
    view = observe_attempt(job(active=1), [pending_pod()], None, spot=False)
    assert view.steps == ()
    assert view.unschedulable_message is None


# --- a run as it goes ----------------------------------------------------------------------


def test_bound_pod_pulling_image_is_started() -> None:
    view = observe_attempt(job(active=1), [pod(state=waiting())], node(NODE), spot=False)
    assert phases(view) == [P.STARTED]
    assert view.steps[0].time == at(1)
    assert view.start_time == at(1)
    assert view.node_name == NODE
    assert view.exit_code is None
    assert not view.ended
    assert view.executor_active


def test_running_simulator_is_computation_started() -> None:
    view = observe_attempt(job(active=1), [pod(state=running(12))], node(NODE), spot=False)
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED]
    assert view.last == Step(
        P.COMPUTATION_STARTED, at(12), "SimulatorRunning", "the simulator started"
    )
    assert not view.ended


def test_simulator_exited_zero_before_pod_succeeded_is_computation_ended() -> None:
    the_pod = pod(state=terminated(0, started=12, finished=40))
    view = observe_attempt(job(active=1), [the_pod], node(NODE), spot=False)
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED, P.COMPUTATION_ENDED]
    assert [s.time for s in view.steps] == [at(1), at(12), at(40)]
    assert view.exit_code == 0
    assert not view.ended
    assert view.end_time is None


def test_succeeded_pod_shows_every_step_with_cluster_times() -> None:
    the_pod = pod(phase="Succeeded", state=terminated(0, started=12, finished=40))
    view = observe_attempt(job(active=1), [the_pod], node(NODE), spot=False)
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED, P.COMPUTATION_ENDED, P.SUCCESS]
    assert [s.time for s in view.steps] == [at(1), at(12), at(40), at(40)]
    assert view.ended
    assert view.exit_code == 0
    assert (view.start_time, view.end_time) == (at(1), at(40))
    assert not view.executor_active


def test_complete_job_is_success_even_before_the_pod_phase_is_seen() -> None:
    the_pod = pod(state=terminated(0, started=12, finished=40))
    view = observe_attempt(job(conditions=job_complete(41)), [the_pod], node(NODE), spot=False)
    assert view.last is not None and view.last.phase == P.SUCCESS
    assert view.ended


def test_complete_job_whose_pod_is_gone() -> None:
    the_job = job(conditions=job_complete(41), succeeded=1, completion=41)
    view = observe_attempt(the_job, [], None, spot=False)
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED, P.COMPUTATION_ENDED, P.SUCCESS]
    assert [s.time for s in view.steps] == [None, None, None, at(41)]
    assert view.ended
    assert view.end_time == at(41)


# --- the simulator fails -------------------------------------------------------------------


def test_nonzero_exit_is_failed_with_exit_code() -> None:
    the_pod = pod(phase="Failed", state=terminated(3, started=12, finished=40))
    view = observe_attempt(
        job(failed=1, conditions=job_failed(41)), [the_pod], node(NODE), spot=False
    )
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED, P.FAILED]
    assert view.last == Step(P.FAILED, at(40), "NonZeroExit", "simulator exited with code 3")
    assert view.exit_code == 3
    assert view.ended and not view.delete_job
    assert view.end_time == at(40)


def test_nonzero_exit_repeats_the_simulators_last_words() -> None:
    logs = "step 118 residual 1e-3\nstep 119 residual nan\nFATAL: solver diverged\n"
    the_pod = pod(phase="Failed", state=terminated(2, started=12, finished=40, message=logs))
    view = observe_attempt(job(failed=1), [the_pod], node(NODE), spot=False)
    assert view.last is not None
    assert view.last.message.startswith("simulator exited with code 2: ")
    assert view.last.message.endswith("FATAL: solver diverged")


def test_oom_killed() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(137, started=12, finished=40, reason="OOMKilled"),
        memory_limit="8Gi",
    )
    view = observe_attempt(job(failed=1), [the_pod], node(NODE), spot=False)
    assert view.last is not None
    assert (view.last.phase, view.last.reason) == (P.FAILED, "OOMKilled")
    assert "8Gi" in view.last.message and "memory" in view.last.message
    assert view.exit_code == 137


@pytest.mark.parametrize(
    ("reason", "kubelet_says"),
    [
        (
            "ErrImagePull",
            f'failed to pull and unpack image "{IMAGE}": failed to resolve reference: not found',
        ),
        ("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"'),
        ("InvalidImageName", f'Failed to apply default image tag "{IMAGE}": invalid reference'),
        (
            "ErrImageNeverPull",
            f'Container image "{IMAGE}" is not present with pull policy of Never',
        ),
    ],
)
def test_image_cannot_be_pulled(reason: str, kubelet_says: str) -> None:
    the_pod = pod(phase="Pending", state=waiting(reason, kubelet_says))
    view = observe_attempt(job(active=1), [the_pod], node(NODE), spot=False)
    assert phases(view) == [P.STARTED, P.FAILED]
    assert view.last is not None and view.last.reason == "ImagePullFailed"
    assert IMAGE in view.last.message and kubelet_says in view.last.message
    assert view.delete_job
    assert view.ended
    assert view.exit_code is None


def test_missing_secret_key_is_create_container_config_error() -> None:
    said = "couldn't find key password in Secret research/db-credentials"
    the_pod = pod(phase="Pending", state=waiting("CreateContainerConfigError", said))
    view = observe_attempt(job(active=1), [the_pod], node(NODE), spot=False)
    assert phases(view) == [P.STARTED, P.FAILED]
    assert view.last is not None
    assert view.last.reason == "CreateContainerConfigError"
    assert said in view.last.message
    assert view.delete_job


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing", "CrashLoopBackOff"])
def test_other_waiting_reasons_do_not_end_the_attempt(reason: str) -> None:
    view = observe_attempt(job(active=1), [pod(state=waiting(reason))], node(NODE), spot=False)
    assert phases(view) == [P.STARTED]
    assert not view.delete_job


def test_simulator_that_cannot_start() -> None:
    said = 'failed to create containerd task: exec: "simulate": executable file not found in $PATH'
    the_pod = pod(
        phase="Failed",
        state=terminated(128, started=None, finished=15, reason="StartError", message=said),
    )
    view = observe_attempt(job(failed=1), [the_pod], node(NODE), spot=False)
    assert phases(view) == [P.STARTED, P.FAILED]
    assert view.last is not None and view.last.reason == "StartError"
    assert "executable file not found" in view.last.message
    assert view.exit_code == 128


# --- timeToLive --------------------------------------------------------------------------


def test_pod_deadline_exceeded_is_ttl_exceeded() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(137, started=12, finished=92),
        reason="DeadlineExceeded",
        message="Pod was active on the node longer than the specified deadline",
    )
    view = observe_attempt(
        job(failed=1, conditions=job_failed(93)), [the_pod], node(NODE), spot=False
    )
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED, P.TTL_EXCEEDED]
    assert view.last is not None
    assert (view.last.reason, view.last.time) == ("DeadlineExceeded", at(92))
    assert view.exit_code == 137


def test_deadline_exceeded_before_the_simulator_started() -> None:
    the_pod = pod(
        phase="Failed",
        state=waiting("ContainerCreating"),
        reason="DeadlineExceeded",
        message="Pod was active on the node longer than the specified deadline",
    )
    view = observe_attempt(job(failed=1), [the_pod], node(NODE), spot=False)
    assert phases(view) == [P.STARTED, P.TTL_EXCEEDED]


def test_job_deadline_exceeded_without_pod() -> None:
    the_job = job(failed=1, conditions=job_failed(93, "DeadlineExceeded"))
    view = observe_attempt(the_job, [], None, spot=False)
    assert phases(view) == [P.STARTED, P.TTL_EXCEEDED]
    assert view.last is not None and view.last.time == at(93)


# --- the executor is lost ---------------------------------------------------------------

_DISRUPTIONS = [
    ("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint", None),
    ("EvictionByEvictionAPI", "Eviction API: evicting", None),
    ("DeletionByPodGC", "PodGC: node no longer exists", None),
    (
        "TerminationByKubelet",
        "Pod was terminated in response to imminent node shutdown.",
        "Terminated",
    ),
    (
        "PreemptionByScheduler",
        "default-scheduler: preempting to accommodate a higher priority pod",
        None,
    ),
]


@pytest.mark.parametrize(
    ("spot", "phase"), [(True, P.SPOT_PREEMPTED), (False, P.EXECUTOR_TERMINATED)]
)
@pytest.mark.parametrize(("cond_reason", "message", "pod_reason"), _DISRUPTIONS)
def test_disrupted_pod(
    cond_reason: str, message: str, pod_reason: str | None, spot: bool, phase: Phase
) -> None:
    name = SPOT if spot else NODE
    the_pod = pod(
        node_name=name,
        phase="Failed",
        state=terminated(143, started=12, finished=52),
        reason=pod_reason,
        extra_conditions=[disruption_target(cond_reason, message, when=50)],
    )
    the_node = None if cond_reason == "DeletionByPodGC" else node(name, spot=spot)
    view = observe_attempt(job(failed=1, conditions=job_failed(53)), [the_pod], the_node, spot=spot)
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED, phase]
    assert view.last is not None and view.last.time == at(50)
    assert name in view.last.message
    assert view.exit_code == 143
    assert view.end_time == at(52)
    assert view.ended


def test_disruption_ends_the_attempt_while_the_pod_still_terminates() -> None:
    the_pod = pod(
        node_name=SPOT,
        state=running(12),
        extra_conditions=[
            disruption_target("EvictionByEvictionAPI", "Eviction API: evicting", when=50)
        ],
        deleted=50,
    )
    view = observe_attempt(job(active=1), [the_pod], node(SPOT, spot=True), spot=True)
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED, P.SPOT_PREEMPTED]
    assert view.ended
    assert view.executor_active  # its grace period is not over: it may still write /outputs


def test_node_pressure_eviction_is_executor_failed() -> None:
    the_pod = pod(
        phase="Failed",
        state=terminated(137, started=12, finished=40),
        reason="Evicted",
        message=(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 64Mi. "
        ),
    )
    for spot in (True, False):
        view = observe_attempt(job(failed=1), [the_pod], node(NODE), spot=spot)
        assert view.last is not None
        assert (view.last.phase, view.last.reason) == (P.EXECUTOR_FAILED, "NodePressureEviction")


def test_success_wins_over_a_late_disruption_target() -> None:
    the_pod = pod(
        phase="Succeeded",
        state=terminated(0, started=12, finished=55),
        extra_conditions=[
            disruption_target("EvictionByEvictionAPI", "Eviction API: evicting", when=50)
        ],
    )
    view = observe_attempt(job(conditions=job_complete(56)), [the_pod], node(NODE), spot=True)
    assert view.last is not None and view.last.phase == P.SUCCESS


def test_running_pod_on_a_vanished_node_keeps_running_until_the_cluster_says_more() -> None:
    view = observe_attempt(job(active=1), [pod(node_name=SPOT, state=running(12))], None, spot=True)
    assert phases(view) == [P.STARTED, P.COMPUTATION_STARTED]
    assert not view.ended


def test_deleted_pod_on_an_unreachable_node_is_no_longer_active() -> None:
    lost = node(
        SPOT,
        spot=True,
        ready="Unknown",
        taints=[taint("node.kubernetes.io/unreachable", "NoExecute")],
    )
    the_pod = pod(node_name=SPOT, state=running(12), deleted=400)
    view = observe_attempt(job(active=1), [the_pod], lost, spot=True)
    assert view.last is not None
    assert (view.last.phase, view.last.reason) == (P.SPOT_PREEMPTED, "NodeLost")
    assert not view.executor_active


@pytest.mark.parametrize(
    ("spot", "preempted"), [(True, P.SPOT_PREEMPTED), (False, P.EXECUTOR_TERMINATED)]
)
@pytest.mark.parametrize(
    ("node_kwargs", "reason", "kind"),
    [
        (None, "NodeDeleted", "preempted"),
        (
            {"taints": [taint("cloud.google.com/impending-node-termination", "NoExecute")]},
            "NodeTainted",
            "preempted",
        ),
        (
            {
                "taints": [taint("node.kubernetes.io/unschedulable", "NoSchedule")],
                "unschedulable": True,
            },
            "NodeDrained",
            "preempted",
        ),
        ({"ready": "Unknown"}, "NodeLost", "preempted"),
        ({}, "ExecutorLost", "executor-failed"),
    ],
    ids=["node-deleted", "node-tainted", "node-drained", "node-not-ready", "node-healthy"],
)
def test_pod_already_gone(
    node_kwargs: dict[str, Any] | None, reason: str, kind: str, spot: bool, preempted: Phase
) -> None:
    name = SPOT if spot else NODE
    the_node = None if node_kwargs is None else node(name, spot=spot, **node_kwargs)
    the_job = job(failed=1, conditions=job_failed(60))
    view = observe_attempt(the_job, [], the_node, spot=spot, node_name=name)
    expected = preempted if kind == "preempted" else P.EXECUTOR_FAILED
    assert phases(view) == [P.STARTED, expected]
    assert view.steps[0].time is None  # implied: the cluster no longer says when
    assert view.last is not None
    assert (view.last.reason, view.last.time) == (reason, at(60))
    assert view.ended and view.end_time == at(60)
    assert view.node_name == name


def test_pod_gone_job_still_running_says_nothing_yet() -> None:
    view = observe_attempt(job(active=1), [], node(NODE), spot=False, node_name=NODE)
    assert view.steps == ()
    assert not view.ended


# --- which pod ---------------------------------------------------------------------------


def test_pick_pod_prefers_the_pod_not_being_deleted() -> None:
    old = pod(state=running(12), created=0.5, suffix="old00")
    old["metadata"]["deletionTimestamp"] = ts(90)
    new = pod(state=waiting(), created=0.2, suffix="new00")
    assert pick_pod([old, new]) is new
    assert pick_pod([new, old]) is new


def test_pick_pod_takes_the_newest() -> None:
    first = pod(
        phase="Failed", state=terminated(1, started=5, finished=8), created=1, suffix="aaaaa"
    )
    second = pod(state=running(20), created=15, suffix="bbbbb")
    assert pick_pod([second, first]) is second
    assert pick_pod([]) is None


# --- every observation is a path the lifecycle allows ----------------------------------


def _scenarios() -> list[AttemptObservation]:
    gone = job(failed=1, conditions=job_failed(60))
    return [
        observe_attempt(job(active=1), [pod(state=waiting())], node(NODE), spot=False),
        observe_attempt(job(active=1), [pod(state=running(12))], node(NODE), spot=False),
        observe_attempt(
            job(),
            [pod(phase="Succeeded", state=terminated(0, started=12, finished=40))],
            None,
            spot=False,
        ),
        observe_attempt(job(conditions=job_complete(41)), [], None, spot=False),
        observe_attempt(
            job(failed=1),
            [pod(phase="Failed", state=terminated(3, started=12, finished=40))],
            None,
            spot=False,
        ),
        observe_attempt(job(active=1), [pod(state=waiting("ImagePullBackOff"))], None, spot=False),
        observe_attempt(gone, [], None, spot=True, node_name=SPOT),
        observe_attempt(gone, [], node(NODE), spot=False, node_name=NODE),
        observe_attempt(gone, [], None, spot=False),
        observe_attempt(
            job(failed=1, conditions=job_failed(93, "DeadlineExceeded")), [], None, spot=False
        ),
        observe_attempt(
            job(),
            [
                pod(
                    phase="Failed",
                    state=terminated(143, started=12, finished=52),
                    extra_conditions=[
                        disruption_target(
                            "DeletionByPodGC", "PodGC: node no longer exists", when=50
                        )
                    ],
                )
            ],
            None,
            spot=True,
        ),
    ]


@pytest.mark.parametrize("index", range(11))
def test_steps_form_a_legal_path(index: int) -> None:
    view = _scenarios()[index]
    assert view.steps, "every scenario shows something"
    assert_legal_chain(view)
    assert view.ended == (
        view.steps[-1].phase not in {P.STARTED, P.COMPUTATION_STARTED, P.COMPUTATION_ENDED}
    )


# --- compute seconds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("4Gi", Decimal(4 * 2**30)),
        ("128974848", Decimal(128974848)),
        ("129M", Decimal(129_000_000)),
        ("1e3", Decimal(1000)),
        ("250u", Decimal("0.00025")),
    ],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "two", "1.5 cores", "5mi", "-"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("cpu", "gpu", "expected"),
    [("500m", 0, (50.0, 0.0)), ("2", 4, (200.0, 400.0)), ("1.5", 1, (150.0, 100.0))],
)
def test_compute_seconds(cpu: str, gpu: int, expected: tuple[float, float]) -> None:
    assert compute_seconds(job(cpu=cpu, gpu=gpu), at(10), at(110)) == pytest.approx(expected)


def test_compute_seconds_without_times_or_job() -> None:
    assert compute_seconds(job(), None, at(10)) == (0.0, 0.0)
    assert compute_seconds(job(), at(10), None) == (0.0, 0.0)
    assert compute_seconds(None, at(0), at(10)) == (0.0, 0.0)
    assert compute_seconds(job(), at(20), at(10)) == (0.0, 0.0)


def test_a_failed_mount_names_the_missing_secret_input() -> None:
    events = [
        {"message": 'MountVolume.SetUp failed for volume "input-creds" : secret "key" not found'},
        {"message": 'MountVolume.SetUp failed for volume "input-creds" : secret "key" not found'},
        {"message": 'MountVolume.SetUp failed for volume "outputs" : some other trouble'},
    ]
    assert missing_secret_inputs(events, "team-a") == [
        "input 'creds': Secret 'key' does not exist in namespace 'team-a' "
        "(the kubelet cannot mount it)"
    ]
    assert missing_secret_inputs([], "team-a") == []


def test_only_a_bound_pod_still_creating_its_container_waits_to_mount() -> None:
    assert waiting_to_mount(pod(phase="Pending", state=waiting("ContainerCreating")))
    assert not waiting_to_mount(pod(phase="Running", state=running(3)))
    assert not waiting_to_mount(
        pod(phase="Pending", node_name=None, state=waiting("ContainerCreating"))
    )
    assert not waiting_to_mount(None)
