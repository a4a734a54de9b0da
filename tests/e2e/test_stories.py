"""User stories for SPEC behaviours no other e2e file covers: kills from every waiting phase,
retries after endings other than Failed, resubmission budgets, the default fallback, PVC
inputs, holding a task whose Job exists, what a task passes to its pods, explicit spot,
MachineGroup task counts, and the operator watching only what it owns."""

from __future__ import annotations

import json
import re
import select
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.cluster import (
    KUBECONFIG,
    condition,
    eventually,
    kubectl,
    kubectl_binary,
    kubectl_json,
)
from tests.e2e.conftest import Operator
from tests.e2e.pools import Pool
from tests.e2e.tasks import (
    HEADROOM,
    IMAGE,
    apply,
    entry,
    get,
    history,
    jobs_of,
    patch_spec,
    pods_of,
    task_manifest,
    wait_phase,
)
from tests.e2e.test_preemption import reclaim, resume_is_short, run_long_task

pytestmark = pytest.mark.usefixtures("operator")

#: How often a task in PendingInput looks for its inputs again (the operator's INPUT_POLL).
INPUT_POLL = 3.0
#: A finalizer of the test's own that keeps a pod from going away (as a slow kubelet would).
LINGER = "e2e.simtask.dev/linger"


# ---------------------------------------------------------------- helpers


def job_names(ns: str, name: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in jobs_of(ns, name))


def steps(task: dict[str, Any]) -> list[tuple[str, int]]:
    """status.history as (phase, attempt), oldest first."""
    return [(h["phase"], h["attempt"]) for h in task["status"]["history"]]


def stays(probe: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert `probe` holds throughout the next `seconds` (a negative check has no event to
    wait for: the window is as long as the operator would need to do the wrong thing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), what
        time.sleep(0.3)


def wait_attempt(ns: str, name: str, attempt: int, *phases: str, timeout: float) -> dict[str, Any]:
    """Wait until the task's attempt `attempt` is in one of `phases`; return the task."""

    def probe() -> dict[str, Any] | None:
        task = get(ns, name)
        status = task.get("status") or {}
        return task if status.get("attempt") == attempt and status.get("phase") in phases else None

    try:
        return eventually(probe, timeout=timeout, what=f"{name} attempt {attempt} in {phases}")
    except AssertionError as exc:
        status = get(ns, name).get("status") or {}
        raise AssertionError(f"{exc}\nstatus now: {json.dumps(status, indent=1)[:3000]}") from None


def group(name: str) -> dict[str, Any]:
    return dict(kubectl_json("get", "machinegroup", name))


def set_group(name: str, **spec: Any) -> dict[str, Any]:
    """Change a MachineGroup's spec, as its administrator; return it once the operator has
    seen the change (its status.observedGeneration caught up)."""
    kubectl("patch", "machinegroup", name, "--type=merge", "-p", json.dumps({"spec": spec}))

    def seen() -> dict[str, Any] | None:
        obj = group(name)
        observed = (obj.get("status") or {}).get("observedGeneration")
        return obj if observed == obj["metadata"]["generation"] else None

    return eventually(seen, timeout=HEADROOM, what=f"MachineGroup {name} change seen")


def add_finalizer(ns: str, pod: str) -> None:
    kubectl(
        "patch", "pod", pod, "-n", ns, "--type=json",
        "-p", json.dumps([{"op": "add", "path": "/metadata/finalizers/-", "value": LINGER}]),
    )  # fmt: skip


def remove_finalizer(ns: str, pod: str) -> None:
    proc = kubectl("get", "pod", pod, "-n", ns, "-o", "json", check=False)
    if proc.returncode != 0:
        return
    kept = json.loads(proc.stdout)["metadata"].get("finalizers") or []
    if LINGER in kept:
        kubectl(
            "patch", "pod", pod, "-n", ns, "--type=merge", "-p",
            json.dumps({"metadata": {"finalizers": [f for f in kept if f != LINGER]}}),
        )  # fmt: skip


def queue_position(ns: str, name: str, position: int) -> None:
    """Wait until the task shows `position` in its group's queue."""
    try:
        eventually(
            lambda: get(ns, name).get("status", {}).get("queuePosition") == position,
            timeout=HEADROOM,
            what=f"{name} at queue position {position}",
        )
    except AssertionError as exc:
        shown = {
            t["metadata"]["name"]: (
                t["metadata"]["creationTimestamp"],
                (t.get("status") or {}).get("phase"),
                (t.get("status") or {}).get("queuePosition"),
            )
            for t in kubectl_json("get", "simtasks", "-n", ns)["items"]
        }
        raise AssertionError(f"{exc}\n(created, phase, queuePosition) now: {shown}") from None


# ---------------------------------------------------------------- retry after other endings


def _end_killed(ns: str, name: str) -> dict[str, Any]:
    apply(ns, task_manifest(name, duration="10m"))
    wait_phase(ns, name, "ComputationStarted")
    patch_spec(ns, name, {"kill": True})
    return {"kill": False}  # spec.kill is un-set only together with a raised retry


def _end_ttl_exceeded(ns: str, name: str) -> dict[str, Any]:
    apply(ns, task_manifest(name, duration="10m", timeToLive="2s"))
    return {"timeToLive": "1m"}  # the user gives the run the time it needs


@pytest.mark.parametrize(
    ("ending", "make_it_end"),
    [("Killed", _end_killed), ("TTLExceeded", _end_ttl_exceeded)],
    ids=["Killed", "TTLExceeded"],
)
def test_retry_after_an_ending_other_than_failed_runs_a_new_attempt(
    namespace: str, ending: str, make_it_end: Callable[[str, str], dict[str, Any]]
) -> None:
    fix = make_it_end(namespace, "rerun")
    wait_phase(namespace, "rerun", ending, within=6)

    patch_spec(
        namespace,
        "rerun",
        {
            **fix,
            "retry": 1,
            "podTemplate": {"metadata": {"annotations": {"testbed.simtask.dev/duration": "1s"}}},
        },
    )

    task = wait_phase(namespace, "rerun", "Success", within=6)
    status = task["status"]
    assert status["attempt"] == 2 and status.get("resubmissions", 0) == 0
    assert steps(task)[-5:] == [
        ("Submitted", 2),
        ("Started", 2),
        ("ComputationStarted", 2),
        ("ComputationEnded", 2),
        ("Success", 2),
    ]
    assert (ending, 1) in steps(task)
    assert entry(task, "Submitted", 2)["reason"] == "RetryRequested"
    assert [a["phase"] for a in status["attempts"]] == [ending, "Success"]
    assert condition(task, "Succeeded")["status"] == "True"
    assert job_names(namespace, "rerun")[-1] == "rerun-a2"
    (pod,) = [
        p
        for p in pods_of(namespace, "rerun")
        if p["metadata"]["labels"]["simtask.dev/attempt"] == "2"
    ]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert (env["SIMTASK_ATTEMPT"], env["SIMTASK_PREVIOUS_ATTEMPT_PHASE"]) == ("2", ending)


# ---------------------------------------------------------------- a PVC input


@pytest.fixture
def persistent_volumes() -> Iterator[list[str]]:
    """PersistentVolumes (cluster-scoped) the test makes; deleted after it."""
    made: list[str] = []
    yield made
    for name in made:
        kubectl("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)


def test_task_waits_for_its_claim_to_be_bound_then_runs(
    namespace: str, persistent_volumes: list[str]
) -> None:
    # The local cluster has no provisioner: a claim of a class nobody provisions stays
    # Pending until an administrator makes a volume for it.
    storage_class = f"e2e-static-{uuid.uuid4().hex[:6]}"
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "mesh-claim"},
        "spec": {
            "storageClassName": storage_class,
            "accessModes": ["ReadOnlyMany"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(claim))
    apply(
        namespace,
        task_manifest(
            "from-volume",
            duration="1s",
            inputs=[{"name": "mesh", "persistentVolumeClaim": "mesh-claim"}],
        ),
    )

    task = wait_phase(namespace, "from-volume", "PendingInput")
    message = task["status"]["message"]
    assert "mesh-claim" in message and "not Bound" in message, message
    assert jobs_of(namespace, "from-volume") == []

    volume = storage_class
    persistent_volumes.append(volume)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "storageClassName": storage_class,
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": f"/tmp/{volume}"},
            # Made for this claim: no other claim of the class can take it.
            "claimRef": {"namespace": namespace, "name": "mesh-claim"},
        },
    }
    kubectl("apply", "-f", "-", input_text=json.dumps(pv))
    # The PV controller looks at a claim when it changes, else at its 15 s resync: the
    # administrator labels the claim with its volume, so it looks now.
    kubectl("label", "pvc", "mesh-claim", "-n", namespace, f"e2e.simtask.dev/volume={volume}")
    eventually(
        lambda: (
            kubectl_json("get", "pvc", "mesh-claim", "-n", namespace)["status"].get("phase")
            == "Bound"
        ),
        timeout=HEADROOM,
        what="the claim Bound by the PV controller",
    )

    task = wait_phase(namespace, "from-volume", "Success", within=INPUT_POLL + 5)
    assert history(task)[:2] == ["PendingInput", "Submitted"]
    pod_spec = jobs_of(namespace, "from-volume")[0]["spec"]["template"]["spec"]
    assert {
        "name": "input-mesh",
        "persistentVolumeClaim": {"claimName": "mesh-claim", "readOnly": True},
    } in pod_spec["volumes"]


# ---------------------------------------------------------------- the operator watches what it owns

#: What the API server has sent of a resource: objects in LIST answers (from its watch cache
#: or from etcd) and events on watches, counted by the API server itself, per client request.
_SENT = re.compile(
    r"^(apiserver_watch_events_total|apiserver_cache_list_returned_objects_total"
    r"|apiserver_storage_list_returned_objects_total)\{([^}]*)\} (\S+)$"
)
_RESOURCES = {'group="",resource="pods"': "pods", 'group="batch",resource="jobs"': "jobs"}


def sent_by_apiserver() -> Counter[str]:
    """Objects and events of pods and Jobs the API server has sent to all its clients so far,
    by resource and by list/watch."""
    out: Counter[str] = Counter()
    for line in kubectl("get", "--raw", "/metrics").stdout.splitlines():
        match = _SENT.match(line)
        if not match:
            continue
        for labels, resource in _RESOURCES.items():
            if labels in match.group(2):
                how = "watch" if match.group(1) == "apiserver_watch_events_total" else "list"
                out[f"{resource} {how}"] += int(float(match.group(3)))
    return out


def settled() -> Counter[str]:
    """sent_by_apiserver() once it has not moved for a second: every event sent."""
    seen: dict[str, Any] = {"value": None, "since": 0.0}

    def probe() -> Counter[str] | None:
        now, value = time.monotonic(), sent_by_apiserver()
        if value != seen["value"]:
            seen["value"], seen["since"] = value, now
            return None
        return value if now - seen["since"] >= 1.0 else None

    return eventually(probe, timeout=HEADROOM, interval=0.25, what="the API server's counts settle")


def make_decoys(ns: str, batch: str, count: int) -> None:
    """Pods and Jobs the operator does not own: pods no scheduler takes, suspended Jobs."""
    container = {"name": "c", "image": IMAGE}
    items: list[dict[str, Any]] = []
    for i in range(count):
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"decoy-{batch}-{i}", "labels": {"e2e": "decoy"}},
                "spec": {"schedulerName": "e2e-nobody", "containers": [container]},
            }
        )
        items.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": f"decoy-{batch}-{i}", "labels": {"e2e": "decoy"}},
                "spec": {
                    "suspend": True,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
                },
            }
        )
    kubectl(
        "create", "-n", ns, "-f", "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )  # fmt: skip


def minus(after: Counter[str], before: Counter[str]) -> Counter[str]:
    return Counter({k: after[k] - before[k] for k in after.keys() | before.keys()})


@pytest.fixture
def cluster_wide_watches() -> Iterator[Callable[[], None]]:
    """Start `kubectl get pods/jobs -A --watch` (what an operator that watches everything
    does); stopped after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        for resource in ("pods", "jobs"):
            proc = subprocess.Popen(
                [kubectl_binary(), "--kubeconfig", str(KUBECONFIG), "get", resource, "-A",
                 "--watch", "-o", "name"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(proc)
            # Its first line comes after its LIST: from then on it receives every event.
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], HEADROOM)
            assert ready and proc.stdout.readline(), (
                f"kubectl get {resource} --watch printed nothing"
            )

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_operator_lists_and_watches_only_the_pods_and_jobs_it_owns(
    namespace: str, operator: Operator, cluster_wide_watches: Callable[[], None]
) -> None:
    # The API server's counters are cluster-wide: wait until no earlier test's namespace is
    # still being emptied, so that nothing but this story moves pods and Jobs.
    eventually(
        lambda: (
            not [
                n
                for n in kubectl_json("get", "namespaces")["items"]
                if n["status"]["phase"] == "Terminating"
            ]
        ),
        timeout=90,
        what="no namespace Terminating",
    )
    decoys = 30
    margin = decoys // 2

    # What the other clients (scheduler, controller-manager, kwok) get for a batch of decoys.
    operator.stop()
    try:
        before = settled()
        make_decoys(namespace, "a", decoys)
        baseline = minus(settled(), before)
        assert baseline["pods watch"] >= decoys, baseline  # the control plane itself watches
    finally:
        operator.start()

    # (What the operator's start lists is not asserted: the list counters are cluster-wide and
    # another client's relist in that window counts too; the watch events below are the proof.)
    started = minus(minus(settled(), before), baseline)

    # With the operator running, a batch of decoys costs the API server nothing more.
    before = settled()
    make_decoys(namespace, "b", decoys)
    running = minus(settled(), before)
    for key in ("pods watch", "jobs watch"):
        assert running[key] <= baseline[key] + margin, (key, running, baseline)

    # The measure sees a client that watches every pod and Job: the story can fail.
    cluster_wide_watches()
    before = settled()
    make_decoys(namespace, "c", decoys)
    watched = minus(settled(), before)
    print(f"sent for {decoys} decoy pods and Jobs: {baseline=} {started=} {running=} {watched=}")
    for key in ("pods watch", "jobs watch"):
        assert watched[key] >= baseline[key] + decoys - margin, (key, watched, baseline)


# ---------------------------------------------------------------- kill from every waiting phase


def test_kill_a_task_waiting_for_its_input(namespace: str) -> None:
    apply(namespace, task_manifest("needs-mesh", inputs=[{"name": "mesh", "configMap": "mesh"}]))
    wait_phase(namespace, "needs-mesh", "PendingInput")
    patch_spec(namespace, "needs-mesh", {"kill": True})
    task = wait_phase(namespace, "needs-mesh", "Killed")
    assert history(task) == ["PendingInput", "PendingKilled", "Killed"]
    assert condition(task, "Failed")["status"] == "True"
    # The input shows up after the kill: the task stays killed and never gets a Job.
    kubectl("create", "configmap", "mesh", "-n", namespace, "--from-literal=cells=20")
    stays(
        lambda: (
            not jobs_of(namespace, "needs-mesh")
            and get(namespace, "needs-mesh")["status"]["phase"] == "Killed"
        ),
        INPUT_POLL + 2,
        "the killed task started once its input existed",
    )
    assert get(namespace, "needs-mesh")["status"]["attempt"] == 1


def test_kill_a_task_queued_behind_its_groups_quota(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    pool = pools(spot=False)
    set_group(pool.group, maxConcurrentTasks=1)
    apply(namespace, task_manifest("holder", duration="10m", machineGroup=pool.group))
    wait_phase(namespace, "holder", "ComputationStarted")
    # Named in creation order: the operator orders tasks submitted within the same second
    # by name (timestamps have 1 s resolution), which this story is not about.
    for name, position in (("queued", 1), ("waiting", 2)):
        apply(namespace, task_manifest(name, duration="1s", machineGroup=pool.group))
        queue_position(namespace, name, position)

    patch_spec(namespace, "queued", {"kill": True})

    task = wait_phase(namespace, "queued", "Killed")
    assert history(task) == ["Submitted", "PendingKilled", "Killed"]
    assert jobs_of(namespace, "queued") == []
    # It leaves the queue: the task behind it moves up.
    eventually(
        lambda: get(namespace, "waiting")["status"].get("queuePosition") == 1,
        timeout=HEADROOM,
        what="the task behind it moves up to position 1",
    )
    # The slot frees: the task behind gets it, the killed one never runs.
    patch_spec(namespace, "holder", {"kill": True})
    wait_phase(namespace, "waiting", "Success", within=8)
    status = get(namespace, "queued")["status"]
    assert (status["phase"], status["attempt"]) == ("Killed", 1)
    assert jobs_of(namespace, "queued") == []
    # Killed is not queued: kubectl shows no place in the queue (SPEC: only while Submitted).
    assert "queuePosition" not in status, (
        f"a Killed task shows queuePosition {status['queuePosition']}"
    )


def test_kill_a_task_waiting_for_its_resubmission(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    pool = pools(spot=True)
    task = run_long_task(namespace, "lost", pool)
    pod = task["status"]["podName"]
    # The lost attempt's pod lingers, so the task waits for its resubmission as long as the
    # test needs (a resubmission never starts while the old pod is there).
    add_finalizer(namespace, pod)
    try:
        reclaim(task["status"]["nodeName"])
        waiting = eventually(
            lambda: (
                (s := get(namespace, "lost")["status"]).get("phase") == "SpotPreempted"
                and s.get("nextAttemptTime")
                and s
            ),
            timeout=3 * HEADROOM,
            what="SpotPreempted, with its next attempt announced",
        )
        assert waiting["attempt"] == 1

        patch_spec(namespace, "lost", {"kill": True})

        wait_phase(namespace, "lost", "PendingKilled", "Killed")
    finally:
        remove_finalizer(namespace, pod)
    task = wait_phase(namespace, "lost", "Killed")
    status = task["status"]
    assert history(task) == [
        "Submitted",
        "Started",
        "ComputationStarted",
        "SpotPreempted",
        "PendingKilled",
        "Killed",
    ]
    assert (status["attempt"], status.get("resubmissions", 0)) == (1, 0)
    assert condition(task, "Failed")["status"] == "True"
    stays(
        lambda: "lost-a2" not in job_names(namespace, "lost"),
        3,
        "a new attempt started after the kill",
    )
    status = get(namespace, "lost")["status"]
    assert status["phase"] == "Killed"
    # Killed: no further attempt, and the status announces none.
    assert "nextAttemptTime" not in status, (
        f"a Killed task shows nextAttemptTime {status['nextAttemptTime']}"
    )


# ---------------------------------------------------------------- resubmission budgets


def test_max_resubmissions_runs_out_after_the_last_allowed_one(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    pool = pools(spot=True, nodes_count=2)
    task = run_long_task(namespace, "fragile", pool, maxResubmissions=1)
    first = task["status"]["nodeName"]

    reclaim(first)
    task = wait_attempt(namespace, "fragile", 2, "ComputationStarted", timeout=3 * HEADROOM)
    second = task["status"]["nodeName"]
    assert second in pool.nodes and second != first
    reclaim(second)

    kubectl(
        "wait", "-n", namespace, "--for=condition=Failed", f"--timeout={3 * HEADROOM:.0f}s",
        "simtask/fragile",
    )  # fmt: skip
    task = get(namespace, "fragile")
    status = task["status"]
    assert status["phase"] == "SpotPreempted"
    assert (status["attempt"], status["resubmissions"]) == (2, 1)
    assert "maxResubmissions 1 reached" in status["message"], status["message"]
    assert "no resubmission" in status["message"] and second in status["message"]
    assert steps(task) == [
        ("Submitted", 1),
        ("Started", 1),
        ("ComputationStarted", 1),
        ("SpotPreempted", 1),
        ("Submitted", 2),
        ("Started", 2),
        ("ComputationStarted", 2),
        ("SpotPreempted", 2),
    ]
    assert [(a["phase"], a["nodeName"]) for a in status["attempts"]] == [
        ("SpotPreempted", first),
        ("SpotPreempted", second),
    ]
    assert "nextAttemptTime" not in status
    assert "fragile-a3" not in job_names(namespace, "fragile")
    eventually(
        lambda: not pods_of(namespace, "fragile"), timeout=2 * HEADROOM, what="lost pods removed"
    )


def test_fallback_group_by_default_after_two_spot_preemptions(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    spot = pools(spot=True, nodes_count=2)
    on_demand = pools(spot=False, nodes_count=1)
    task = run_long_task(namespace, "resilient", spot, fallbackMachineGroup=on_demand.group)
    assert task["spec"]["fallbackAfterPreemptions"] == 2  # the default, as kubectl shows it
    first = task["status"]["nodeName"]

    reclaim(first)
    # One spot preemption is not enough: attempt 2 stays on spot.
    task = wait_attempt(namespace, "resilient", 2, "ComputationStarted", timeout=3 * HEADROOM)
    assert task["status"]["machineGroup"] == spot.group
    second = task["status"]["nodeName"]
    assert second in spot.nodes and second != first
    resume_is_short(namespace, "resilient")
    reclaim(second)

    # The second one is: attempt 3 runs on the fallback group.
    task = wait_phase(namespace, "resilient", "Success", timeout=4 * HEADROOM)
    status = task["status"]
    assert (status["attempt"], status["resubmissions"]) == (3, 2)
    assert [a["machineGroup"] for a in status["attempts"]] == [
        spot.group,
        spot.group,
        on_demand.group,
    ]
    assert [a["phase"] for a in status["attempts"]] == ["SpotPreempted", "SpotPreempted", "Success"]
    assert status["machineGroup"] == on_demand.group and status["nodeName"] in on_demand.nodes


# ---------------------------------------------------------------- hold of a Submitted task


def test_hold_suspends_the_job_of_a_submitted_task_and_release_resumes_it(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    pool = pools(spot=False, nodes_count=1)
    story = uuid.uuid4().hex[:8]
    # Its pod waits for a node with a label no node has yet.
    apply(
        namespace,
        task_manifest("waiting", duration="1s", nodeSelector={"e2e.simtask.dev/story": story}),
    )
    eventually(
        lambda: (
            get(namespace, "waiting")["status"].get("reason") == "Unschedulable"
            and pods_of(namespace, "waiting")
        ),
        timeout=HEADROOM,
        what="Submitted with a Job whose pod cannot be scheduled",
    )
    assert get(namespace, "waiting")["status"]["phase"] == "Submitted"

    patch_spec(namespace, "waiting", {"hold": True})

    task = wait_phase(namespace, "waiting", "Held")
    assert task["status"]["reason"] == "HeldByUser"
    (job,) = jobs_of(namespace, "waiting")
    assert job["spec"]["suspend"] is True
    eventually(
        lambda: not pods_of(namespace, "waiting"),
        timeout=HEADROOM,
        what="the suspended Job's pod removed",
    )

    patch_spec(namespace, "waiting", {"hold": False})

    task = wait_phase(namespace, "waiting", "Submitted")
    # Released, then, pass by pass, what the new pod shows: not yet scheduled, unschedulable.
    assert task["status"]["reason"] in ("Released", "Submitted", "Unschedulable"), task["status"]
    eventually(
        lambda: jobs_of(namespace, "waiting")[0]["spec"]["suspend"] is False,
        timeout=HEADROOM,
        what="the Job unsuspended",
    )
    eventually(lambda: pods_of(namespace, "waiting"), timeout=HEADROOM, what="a pod again")
    # A node that fits appears: the same attempt runs there.
    kubectl("label", "node", pool.nodes[0], f"e2e.simtask.dev/story={story}")
    task = wait_phase(namespace, "waiting", "Success", within=6)
    assert task["status"]["nodeName"] == pool.nodes[0] and task["status"]["attempt"] == 1
    assert history(task)[:3] == ["Submitted", "Held", "Submitted"]
    assert job_names(namespace, "waiting") == ["waiting-a1"]


# ---------------------------------------------------------------- what the task gives its pods


@pytest.fixture
def priority_class() -> Iterator[tuple[str, int]]:
    name, value = f"e2e-simulations-{uuid.uuid4().hex[:6]}", 1000
    kubectl("create", "priorityclass", name, f"--value={value}", "--description=e2e simulations")
    yield name, value
    kubectl("delete", "priorityclass", name, "--ignore-not-found", check=False)


def test_task_scheduling_fields_and_pod_metadata_reach_the_pod(
    namespace: str, pools: Callable[..., Pool], priority_class: tuple[str, int]
) -> None:
    pool = pools(spot=False, nodes_count=1)
    node = pool.nodes[0]
    # The node is dedicated: only pods that tolerate its taint and select it land there.
    kubectl("taint", "node", node, "e2e.simtask.dev/dedicated=cfd:NoSchedule")
    toleration = {
        "key": "e2e.simtask.dev/dedicated",
        "operator": "Equal",
        "value": "cfd",
        "effect": "NoSchedule",
    }
    name, value = priority_class
    manifest = task_manifest(
        "placed",
        duration="2s",
        priorityClassName=name,
        tolerations=[toleration],
        nodeSelector=pool.selector,
    )
    template = manifest["spec"]["podTemplate"]["metadata"]
    template["labels"] = {"team": "aero", "project": "wing"}
    template["annotations"]["e2e.simtask.dev/cost-center"] = "cfd-42"
    apply(namespace, manifest)

    task = wait_phase(namespace, "placed", "Success")
    assert task["status"]["nodeName"] == node
    (pod,) = pods_of(namespace, "placed")
    spec, meta = pod["spec"], pod["metadata"]
    assert (spec["priorityClassName"], spec["priority"]) == (name, value)
    assert toleration in spec["tolerations"]
    assert pool.selector.items() <= spec["nodeSelector"].items()
    assert spec["nodeName"] == node
    assert {"team": "aero", "project": "wing"}.items() <= meta["labels"].items()
    assert meta["annotations"]["e2e.simtask.dev/cost-center"] == "cfd-42"


# ---------------------------------------------------------------- explicit spec.spot


@pytest.mark.parametrize(
    ("spot_nodes", "group_spot", "lost"),
    [(False, True, "SpotPreempted"), (True, False, "ExecutorTerminated")],
    ids=["spot-true-on-plain-nodes", "spot-false-on-spot-nodes"],
)
def test_explicit_spot_on_a_group_names_the_loss(
    namespace: str, pools: Callable[..., Pool], spot_nodes: bool, group_spot: bool, lost: str
) -> None:
    pool = pools(spot=spot_nodes, nodes_count=1)
    set_group(pool.group, spot=group_spot)
    eventually(
        lambda: group(pool.group)["status"].get("spot") is group_spot,
        timeout=HEADROOM,
        what=f"group status spot={group_spot}",
    )
    task = run_long_task(namespace, "placed", pool, maxResubmissions=0)
    node = task["status"]["nodeName"]

    reclaim(node)

    task = wait_phase(namespace, "placed", lost, "SpotPreempted", "ExecutorTerminated", within=6)
    assert task["status"]["phase"] == lost, task["status"]
    assert entry(task, lost)["reason"] == "NodeTainted"
    assert task["status"]["attempts"][0]["phase"] == lost
    assert condition(task, "Failed")["status"] == "True"


# ---------------------------------------------------------------- MachineGroup task counts


def test_group_status_counts_its_running_and_queued_tasks(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    pool = pools(spot=False)
    set_group(pool.group, maxConcurrentTasks=1)
    names = ["first", "second", "third"]
    for name, duration in zip(names, ["8s", "1s", "1s"], strict=True):
        apply(namespace, task_manifest(name, duration=duration, machineGroup=pool.group))

    def counts() -> tuple[int, int]:
        status = group(pool.group).get("status") or {}
        return status.get("runningTasks"), status.get("queuedTasks")

    eventually(lambda: counts() == (1, 2), timeout=HEADROOM, what="1 running, 2 queued")
    assert get(namespace, "first")["status"]["phase"] in ("Started", "ComputationStarted")
    header, row = (line.split() for line in kubectl("get", "mg", pool.group).stdout.splitlines())
    shown = dict(zip(header, row, strict=True))
    assert (shown["RUNNING"], shown["QUEUED"], shown["MAX"]) == ("1", "2", "1"), shown
    for name in names:
        wait_phase(namespace, name, "Success", within=12)
    eventually(lambda: counts() == (0, 0), timeout=HEADROOM, what="0 running, 0 queued")
