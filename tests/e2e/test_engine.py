"""The engine under the lifecycle: kills at creation, old pods waited for, nodes that vanish,
faults (operator killed, API server restarted, watches black-holed), two replicas, and the
same task name deleted and created again. Every story runs on the real local cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.cluster import STATE, eventually, kubectl, kubectl_json
from tests.e2e.conftest import RELEASE_NAMESPACE, Operator
from tests.e2e.pools import Pool
from tests.e2e.tasks import apply, get, history, jobs_of, pods_of, task_manifest, wait_phase
from tests.e2e.test_preemption import LOST, lost_attempt, reclaim, resume_is_short, run_long_task

pytestmark = pytest.mark.usefixtures("operator")

#: What a busy 2-core machine adds to any step that should take a second or two.
HEADROOM = 10.0


def no_duplicates(ns: str, name: str) -> dict[str, Any]:
    """The task has one Job per attempt and no history entry twice; return it."""
    task = get(ns, name)
    status = task["status"]
    jobs = sorted(j["metadata"]["name"] for j in jobs_of(ns, name))
    assert jobs == [f"{name}-a{n}" for n in range(1, status["attempt"] + 1)], (name, jobs)
    steps = Counter((h["phase"], h["attempt"]) for h in status["history"])
    assert max(steps.values()) == 1, (name, steps)
    return task


def timed(probe: Callable[[], Any], *, timeout: float, what: str) -> float:
    """Seconds until `probe` holds (failing after `timeout`)."""
    t0 = time.monotonic()
    eventually(probe, timeout=timeout, interval=0.1, what=what)
    return time.monotonic() - t0


# ---------------------------------------------------------------- kill at creation


def test_a_task_created_killed_is_killed_without_a_job(namespace: str) -> None:
    apply(namespace, task_manifest("stillborn", kill=True))
    task = wait_phase(namespace, "stillborn", "Killed", timeout=HEADROOM)
    assert history(task) == ["PendingKilled", "Killed"]
    assert jobs_of(namespace, "stillborn") == []
    kubectl("wait", "-n", namespace, "--for=condition=Failed", "--timeout=5s", "simtask/stillborn")


# ---------------------------------------------------------------- the old pod goes first


def test_resubmission_waits_until_the_lost_attempts_pod_is_gone(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    pool = pools(spot=True)
    task = run_long_task(namespace, "checkpointing", pool)
    resume_is_short(namespace, "checkpointing")
    pod = task["status"]["podName"]
    # Something keeps the pod from going away (as a kubelet does during the grace period).
    kubectl(
        "patch", "pod", pod, "-n", namespace, "--type=json",
        "-p", '[{"op": "add", "path": "/metadata/finalizers/-", "value": "e2e.simtask.dev/hold"}]',
    )  # fmt: skip
    try:
        reclaim(task["status"]["nodeName"])
        lost = lost_attempt(namespace, "checkpointing", timeout=HEADROOM * 3)
        assert lost["phase"] == "SpotPreempted"
        # Well past the resubmission backoff, attempt 2 has not started while the pod is there.
        waiting = eventually(
            lambda: (
                (s := get(namespace, "checkpointing")["status"])
                .get("message", "")
                .endswith("has stopped")
                and s
            ),
            timeout=HEADROOM * 2,
            what="the task says it waits for the old pod",
        )
        assert pod in waiting["message"] and waiting["attempt"] == 1
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert [j["metadata"]["name"] for j in jobs_of(namespace, "checkpointing")] == [
                "checkpointing-a1"
            ], "attempt 2 started while attempt 1's pod was still there"
            time.sleep(0.5)
    finally:
        # Released whatever happened, or its namespace could never be deleted.
        kept = kubectl_json("get", "pod", pod, "-n", namespace)["metadata"]["finalizers"]
        others = [f for f in kept if f != "e2e.simtask.dev/hold"]
        kubectl(
            "patch", "pod", pod, "-n", namespace, "--type=merge", "-p",
            json.dumps({"metadata": {"finalizers": others}}),
        )  # fmt: skip
    eventually(
        lambda: len(jobs_of(namespace, "checkpointing")) == 2,
        timeout=HEADROOM,
        what="attempt 2 once the old pod is gone",
    )
    wait_phase(namespace, "checkpointing", "Success", timeout=HEADROOM * 3)
    no_duplicates(namespace, "checkpointing")


# ---------------------------------------------------------------- a node deleted outright


@pytest.mark.parametrize("spot", [True, False], ids=["spot", "on-demand"])
def test_a_deleted_node_loses_its_attempt_at_once(
    namespace: str, pools: Callable[..., Pool], spot: bool
) -> None:
    pool = pools(spot=spot)
    task = run_long_task(namespace, "vm-gone", pool)
    resume_is_short(namespace, "vm-gone")
    node = task["status"]["nodeName"]
    kubectl("delete", "node", node, "--wait=false")
    took = timed(
        lambda: get(namespace, "vm-gone")["status"]["phase"] != "ComputationStarted",
        timeout=HEADROOM,
        what="the attempt on the deleted node is lost",
    )
    lost = lost_attempt(namespace, "vm-gone", timeout=1)
    assert (lost["phase"], lost["reason"]) == (LOST[spot], "NodeDeleted"), lost
    assert took <= 5.0, f"took {took:.1f}s to notice the deleted node"
    # The pod on the deleted node never ends by itself; attempt 2 runs on the other node.
    old = [p for p in pods_of(namespace, "vm-gone") if p["spec"].get("nodeName") == node]
    assert all(p["status"]["phase"] != "Succeeded" for p in old)
    task = wait_phase(namespace, "vm-gone", "Success", timeout=HEADROOM * 3)
    assert task["status"]["nodeName"] != node and task["status"]["resubmissions"] == 1
    no_duplicates(namespace, "vm-gone")


# ---------------------------------------------------------------- the operator killed


@pytest.mark.operator_errors
def test_operator_killed_during_a_spot_reclaim_resubmits_each_task_once(
    namespace: str, pools: Callable[..., Pool], operator: Operator
) -> None:
    # 3 nodes of 2 CPUs, 4 tasks of 1: whatever node is reclaimed, the others have room
    # for its tasks' next attempts.
    pool = pools(spot=True, nodes_count=3)
    names = [f"sweep-{i}" for i in range(4)]
    for name in names:
        apply(
            namespace,
            task_manifest(name, duration="20s", machineGroup=pool.group, resources={"cpu": "1"}),
        )
    nodes = {n: wait_phase(namespace, n, "ComputationStarted")["status"]["nodeName"] for n in names}
    for name in names:
        resume_is_short(namespace, name)
    victim = nodes[names[0]]
    reclaim(victim)
    operator.kill()
    time.sleep(1)  # The reclaim goes on without the operator: pods are evicted meanwhile.
    operator.start()
    for name in names:
        task = wait_phase(namespace, name, "Success", timeout=HEADROOM * 6)
        lost = nodes[name] == victim
        assert task["status"]["resubmissions"] == (1 if lost else 0), (name, task["status"])
        assert history(task).count("SpotPreempted") == (1 if lost else 0)
        no_duplicates(namespace, name)


# ---------------------------------------------------------------- the API server restarted


def _component_cmdline(name: str) -> tuple[int, list[str]]:
    pid = int((STATE / "pids" / f"{name}.pid").read_text())
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return pid, [c.decode() for c in cmd if c]


def _running(pid: int) -> bool:
    """Alive, not a zombie nobody reaped (the testbed's components are orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def restart_apiserver(down_for: float) -> None:
    """Kill kube-apiserver (a crash: it drains nothing), keep it down a while, start it again
    with the same flags."""
    pid, cmd = _component_cmdline("kube-apiserver")
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not _running(pid), timeout=30, what="apiserver stopped")
    time.sleep(down_for)  # The outage itself: what the test is about.
    log = open(STATE / "logs" / "kube-apiserver.log", "ab")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, cwd=STATE,
    )  # fmt: skip
    (STATE / "pids" / "kube-apiserver.pid").write_text(str(proc.pid))
    eventually(
        lambda: kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
        timeout=60,
        what="apiserver ready again",
    )


@pytest.mark.operator_errors
def test_an_api_server_restart_loses_nothing(namespace: str, operator: Operator) -> None:
    names = [f"run-{i}" for i in range(12)]
    for name in names:
        apply(namespace, task_manifest(name, duration="15s", resources={"cpu": "500m"}))
    for name in names:
        wait_phase(namespace, name, "ComputationStarted", "ComputationEnded", "Success")
    restart_apiserver(down_for=5)
    apply(namespace, task_manifest("after", duration="1s"))
    for name in [*names, "after"]:
        wait_phase(namespace, name, "Success", timeout=HEADROOM * 6)
        no_duplicates(namespace, name)
    assert operator.health().get("watches") is True


# ---------------------------------------------------------------- a watch black-holed


@pytest.mark.operator_errors
def test_a_black_holed_watch_is_noticed_and_tasks_move_again(
    namespace: str, session_operator_paused: Operator, chart: str
) -> None:
    from tests.e2e.proxy import BlackholeProxy, write_proxied_kubeconfig

    proxy = BlackholeProxy()
    proxy.start()
    try:
        kubeconfig = write_proxied_kubeconfig(chart, proxy.port, STATE / "proxied.kubeconfig")
        read_timeout = 15
        op = Operator(
            str(kubeconfig),
            name="operator-proxied",
            metrics_port=18010,
            health_port=18090,
            args=("--watch-read-timeout", str(read_timeout)),
        )
        op.start()
        try:
            apply(namespace, task_manifest("before", duration="1s"))
            wait_phase(namespace, "before", "Success", timeout=HEADROOM * 2)
            proxy.blackhole()
            t0 = time.monotonic()
            apply(namespace, task_manifest("during", duration="1s"))
            wait_phase(namespace, "during", "Success", timeout=read_timeout + HEADROOM * 4)
            recovered = time.monotonic() - t0
            assert recovered <= read_timeout + HEADROOM * 2, recovered
            log = op.log.read_text()
            assert "nothing received for" in log, "the silent watches were not noticed"
            print(f"watch recovery: {recovered:.1f}s (read timeout {read_timeout}s)")
        finally:
            op.stop()
    finally:
        proxy.stop()


# ---------------------------------------------------------------- two replicas


def _replicas(chart: str, *, elect: bool) -> list[Operator]:
    args = ("--leader-elect", "--leader-election-namespace", RELEASE_NAMESPACE) if elect else ()
    return [
        Operator(
            chart, name=f"replica-{i}", metrics_port=18020 + i, health_port=18100 + i, args=args
        )
        for i in range(2)
    ]


@pytest.mark.operator_errors
def test_two_replicas_one_leads_and_a_standby_takes_over(
    namespace: str, session_operator_paused: Operator, chart: str
) -> None:
    replicas = _replicas(chart, elect=True)
    for op in replicas:
        op.start()
    try:
        leader = eventually(
            lambda: [op for op in replicas if op.health().get("leader")],
            timeout=30,
            what="a leader",
        )
        assert len(leader) == 1
        (leader_op,) = leader
        (standby,) = [op for op in replicas if op is not leader_op]
        health = standby.health()
        assert health["caches"] is True and health["leader"] is False
        names = [f"burst-{i}" for i in range(24)]
        for i, name in enumerate(names):
            apply(namespace, task_manifest(name, duration="2s", resources={"cpu": "250m"}))
            if i == 8:
                leader_op.kill()
                killed_at = time.monotonic()
        eventually(lambda: standby.health().get("leader") is True, timeout=30, what="takeover")
        failover = time.monotonic() - killed_at
        assert failover <= 15.0, f"the standby took {failover:.1f}s to take over"
        print(f"failover after SIGKILL of the leader: {failover:.1f}s")
        for name in names:
            wait_phase(namespace, name, "Success", timeout=HEADROOM * 6)
            no_duplicates(namespace, name)
    finally:
        for op in replicas:
            op.stop()


@pytest.mark.operator_errors
def test_two_replicas_without_election_duplicate_nothing(
    namespace: str, session_operator_paused: Operator, chart: str
) -> None:
    replicas = _replicas(chart, elect=False)
    for op in replicas:
        op.start()
    try:
        names = [f"rolling-{i}" for i in range(16)]
        for name in names:
            apply(namespace, task_manifest(name, duration="2s", resources={"cpu": "250m"}))
        for name in names:
            wait_phase(namespace, name, "Success", timeout=HEADROOM * 6)
            no_duplicates(namespace, name)
        for op in replicas:
            assert not [p for p in op.problems() if "Traceback" in p], op.problems()
    finally:
        for op in replicas:
            op.stop()


# ---------------------------------------------------------------- the same name again


def test_delete_and_create_the_same_task_name_runs_each(namespace: str) -> None:
    uids = []
    for _ in range(5):
        apply(namespace, task_manifest("again", duration="1s"))
        task = wait_phase(namespace, "again", "Success", timeout=HEADROOM * 3)
        uid = task["metadata"]["uid"]
        uids.append(uid)
        (job,) = jobs_of(namespace, "again")
        assert job["metadata"]["ownerReferences"][0]["uid"] == uid
        kubectl("delete", "simtask", "again", "-n", namespace, "--wait=false")
        eventually(
            lambda: kubectl("get", "simtask", "again", "-n", namespace, check=False).returncode,
            timeout=HEADROOM,
            what="the task gone",
        )
    assert len(set(uids)) == 5


# ---------------------------------------------------------------- errors shown on the task


def test_a_job_that_cannot_create_its_pod_says_why(namespace: str) -> None:
    apply(namespace, task_manifest("urgent", priorityClassName="no-such-class"))
    task = eventually(
        lambda: (
            (t := get(namespace, "urgent"))["status"].get("reason") == "PodCreationFailed" and t
        ),
        timeout=HEADROOM,
        what="the task says why it has no pod",
    )
    assert task["status"]["phase"] == "Submitted"
    assert "no-such-class" in task["status"]["message"], task["status"]["message"]


@pytest.mark.operator_errors
def test_a_quota_refusing_the_job_shows_until_it_is_lifted(
    namespace: str, core: client.CoreV1Api
) -> None:
    quota = f"no-jobs-{uuid.uuid4().hex[:4]}"
    kubectl(
        "create", "quota", quota, "-n", namespace, "--hard=count/jobs.batch=0",
    )  # fmt: skip
    eventually(
        lambda: kubectl_json("get", "quota", quota, "-n", namespace).get("status", {}).get("hard"),
        timeout=HEADROOM,
        what="the quota in force",
    )
    apply(namespace, task_manifest("capped", duration="1s"))

    def stalled() -> dict[str, Any] | None:
        task = get(namespace, "capped")
        conds = {c["type"]: c for c in task["status"].get("conditions") or []}
        return task if conds.get("Stalled", {}).get("status") == "True" else None

    task = eventually(stalled, timeout=HEADROOM, what="Stalled with the quota's message")
    status = task["status"]
    assert status["phase"] == "Submitted" and status["reason"] == "JobCreateFailed"
    assert "exceeded quota" in status["message"] and quota in status["message"], status
    kubectl("delete", "quota", quota, "-n", namespace)
    task = wait_phase(namespace, "capped", "Success", timeout=HEADROOM * 8)
    conds = {c["type"]: c["status"] for c in task["status"]["conditions"]}
    assert conds["Stalled"] == "False"
    print(json.dumps(task["status"]["history"], indent=1)[:200])


@pytest.mark.operator_errors
def test_a_job_of_the_same_name_but_another_owner_is_reported_not_adopted(
    namespace: str,
) -> None:
    squatter = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "taken-a1"},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "other", "image": "ghcr.io/example/other:1"}],
                }
            },
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(squatter))
    apply(namespace, task_manifest("taken", duration="1s"))

    def stalled() -> dict[str, Any] | None:
        status = get(namespace, "taken").get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        return status if conds.get("Stalled", {}).get("status") == "True" else None

    status = eventually(stalled, timeout=HEADROOM, what="Stalled: the Job name is taken")
    assert status["reason"] == "JobNameTaken" and "taken-a1" in status["message"], status
    job = kubectl_json("get", "job", "taken-a1", "-n", namespace)
    assert not job["metadata"].get("ownerReferences"), "the operator adopted a Job not its own"
    assert job["spec"]["template"]["spec"]["containers"][0]["name"] == "other"
    # Its owner removes it: the task runs.
    kubectl("delete", "job", "taken-a1", "-n", namespace, "--wait=true")
    wait_phase(namespace, "taken", "Success", timeout=HEADROOM * 4)
