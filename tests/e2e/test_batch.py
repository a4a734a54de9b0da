"""SimulationBatch stories (SPEC §6): a parameter sweep from apply to `kubectl wait`, its
parallelism, spot reclaim under it, failed indexes and a retry of only those, the failure
limit, kill, and the batch's TTL taking its instances with it."""

from __future__ import annotations

import json
import subprocess
import threading
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
from tests.e2e.pools import Pool
from tests.e2e.tasks import HEADROOM, IMAGE

pytestmark = pytest.mark.usefixtures("operator")

EXIT = "testbed.simtask.dev/exit-code"
DURATION = "testbed.simtask.dev/duration"


def batch_manifest(
    name: str,
    *,
    duration: str = "1s",
    annotations: dict[str, str] | None = None,
    template: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A SimulationBatch whose instances' simulated runs last `duration`."""
    body: dict[str, Any] = {
        "image": IMAGE,
        "command": ["simpleFoam"],
        "resources": {"cpu": "1", "memory": "1Gi"},
        "podTemplate": {"metadata": {"annotations": {DURATION: duration, **(annotations or {})}}},
    }
    body.update(template or {})
    return {
        "apiVersion": "simtask.dev/v1alpha1",
        "kind": "SimulationBatch",
        "metadata": {"name": name},
        "spec": {"template": body, **spec},
    }


def apply(ns: str, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-n", ns, "-f", "-", input_text=json.dumps(manifest))


def get_batch(ns: str, name: str) -> dict[str, Any]:
    return dict(kubectl_json("get", "simbatch", name, "-n", ns))


def patch_batch(ns: str, name: str, spec: dict[str, Any]) -> None:
    kubectl("patch", "sb", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


def instances(ns: str, name: str) -> dict[int, dict[str, Any]]:
    """The batch's instance tasks by index."""
    items = kubectl_json("get", "simtasks", "-n", ns, "-l", f"simtask.dev/batch={name}")["items"]
    return {int(t["metadata"]["labels"]["simtask.dev/index"]): t for t in items}


def wait_batch(ns: str, name: str, *phases: str, within: float) -> dict[str, Any]:
    """Wait until the batch's phase is one of `phases` (the step takes `within` seconds,
    HEADROOM more at most); return the batch."""

    def probe() -> dict[str, Any] | None:
        b = get_batch(ns, name)
        return b if (b.get("status") or {}).get("phase") in phases else None

    try:
        return eventually(probe, timeout=within + HEADROOM, what=f"batch {name} in {phases}")
    except AssertionError as exc:
        status = get_batch(ns, name).get("status") or {}
        raise AssertionError(f"{exc}\nstatus now: {json.dumps(status, indent=1)[:3000]}") from None


def pod_of(ns: str, task: str, attempt: int) -> dict[str, Any]:
    pods = kubectl_json(
        "get", "pods", "-n", ns, "-l", f"simtask.dev/task={task},simtask.dev/attempt={attempt}"
    )["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return dict(pods[0])


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "simulator")
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


class Unfinished:
    """Counts a batch's unfinished instances on every watch event of its tasks (a
    `kubectl get --watch` beside the test), keeping the highest count seen."""

    def __init__(self, ns: str, batch: str) -> None:
        self.proc = subprocess.Popen(
            [
                kubectl_binary(),
                "--kubeconfig",
                str(KUBECONFIG),
                "get",
                "simtasks",
                "-n",
                ns,
                "-l",
                f"simtask.dev/batch={batch}",
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.finished: dict[str, bool] = {}
        self.highest = 0
        self.events = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            buf += line
            try:
                event, end = decoder.raw_decode(buf.lstrip())
            except ValueError:
                continue
            buf = buf.lstrip()[end:]
            task = event["object"]
            name = task["metadata"]["name"]
            if event["type"] == "DELETED":
                self.finished.pop(name, None)
            else:
                # Finished as the batch counts it: the task's Succeeded condition is set.
                self.finished[name] = condition(task, "Succeeded") is not None
            self.events += 1
            self.highest = max(self.highest, sum(not f for f in self.finished.values()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=10)


@pytest.fixture
def unfinished() -> Iterator[Callable[[str, str], Unfinished]]:
    watchers: list[Unfinished] = []

    def start(ns: str, batch: str) -> Unfinished:
        watchers.append(Unfinished(ns, batch))
        return watchers[-1]

    yield start
    for w in watchers:
        w.stop()


# ---------------------------------------------------------------- stories


def test_a_sweep_succeeds_each_pod_with_its_index_and_parameters_never_over_parallelism(
    namespace: str, unfinished: Callable[[str, str], Unfinished]
) -> None:
    watch = unfinished(namespace, "reynolds")
    parameters = [
        {"RE": str(100 * (i + 1)), "MESH": "fine" if i % 2 else "coarse"} for i in range(20)
    ]
    apply(
        namespace,
        batch_manifest(
            "reynolds",
            annotations={"sweep.example.com/re": "$(SIMTASK_PARAM_RE)"},
            count=20,
            parallelism=5,
            parameters=parameters,
        ),
    )
    # 4 waves of 5 runs of about 3 s each (bind, start, 1 s run, end).
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Succeeded",
        f"--timeout={30 + 3 * HEADROOM:.0f}s",
        "simbatch/reynolds",
    )
    status = get_batch(namespace, "reynolds")["status"]
    assert status["phase"] == "Success"
    assert (status["succeededIndexes"], status["failedIndexes"]) == ("0-19", "")
    assert (status["succeeded"], status["failed"], status["running"]) == (20, 0, 0)
    assert status["instances"]["total"] == 20 and status["instances"]["Success"] == 20
    assert status["instances"]["pending"] == 0
    assert status["cpuSeconds"] > 0 and status["resubmissions"] == 0
    assert status["startTime"] <= status["completionTime"]

    tasks = instances(namespace, "reynolds")
    assert sorted(tasks) == list(range(20))
    for index, task in tasks.items():
        name = task["metadata"]["name"]
        assert name == f"reynolds-{index}"
        (owner,) = task["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == (
            "SimulationBatch",
            "reynolds",
            True,
        )
        pod = pod_of(namespace, name, 1)
        env = pod_env(pod)
        assert env["SIMTASK_BATCH"] == "reynolds"
        assert env["SIMTASK_INDEX"] == str(index)
        assert env["SIMTASK_PARAM_RE"] == parameters[index]["RE"]
        assert env["SIMTASK_PARAM_MESH"] == parameters[index]["MESH"]
        assert pod["metadata"]["annotations"]["sweep.example.com/re"] == parameters[index]["RE"]

    # Sampled on every watch event of its tasks: never more than 5 unfinished, and 5 reached.
    eventually(lambda: len(watch.finished) == 20 and all(watch.finished.values()), timeout=HEADROOM)
    assert watch.events >= 60, watch.events
    assert watch.highest == 5, f"at most {watch.highest} instances unfinished at once"

    # What `kubectl get simbatch` shows.
    table = kubectl("get", "sb", "reynolds", "-n", namespace).stdout.split()
    assert table[:6] == ["NAME", "PHASE", "SUCCEEDED", "TOTAL", "RUNNING", "FAILED"], table
    assert table[7:12] == ["reynolds", "Success", "20", "20", "0"], table


def test_spot_reclaim_preempts_instances_each_resubmitted_on_its_own(
    namespace: str, pools: Callable[..., Pool]
) -> None:
    pool = pools(spot=True, nodes_count=2)  # 2 CPU each: two 1-CPU instances per node.
    apply(
        namespace,
        batch_manifest(
            "spot", duration="6s", template={"machineGroup": pool.group}, count=6, parallelism=4
        ),
    )

    def running_on_one_node() -> tuple[str, list[int]] | None:
        on: dict[str, list[int]] = {}
        for index, task in instances(namespace, "spot").items():
            st = task.get("status") or {}
            if st.get("phase") == "ComputationStarted":
                on.setdefault(st["nodeName"], []).append(index)
        full = [(node, idx) for node, idx in on.items() if len(idx) == 2]
        return full[0] if full else None

    node, victims = eventually(
        running_on_one_node, timeout=5 + HEADROOM, what="2 instances on a node"
    )
    kubectl("taint", "node", node, "e2e.simtask.dev/reclaimed=true:NoExecute")

    # 6 runs of about 8 s, 2 at a time on the node left, after the loss.
    batch = wait_batch(namespace, "spot", "Success", "Failed", within=40 + 2 * HEADROOM)
    status = batch["status"]
    assert status["phase"] == "Success", status
    assert status["succeededIndexes"] == "0-5"
    tasks = instances(namespace, "spot")
    for index, task in tasks.items():
        st = task["status"]
        if index in victims:
            # Its own loss, its own resubmission: attempt 2 on the node left.
            phases = [a["phase"] for a in st["attempts"]]
            assert phases == ["SpotPreempted", "Success"], (index, phases)
            assert st["resubmissions"] == 1
            assert st["attempts"][0]["nodeName"] == node
            assert st["attempts"][1]["nodeName"] != node
        else:
            assert st["resubmissions"] == 0, (index, st["attempts"])
            assert st["attempt"] == 1
    assert status["resubmissions"] == len(victims) == 2


def test_failed_indexes_then_a_retry_reruns_only_those(namespace: str) -> None:
    exits = [{"EXIT": "2" if i in (3, 7) else "0"} for i in range(10)]
    apply(
        namespace,
        batch_manifest(
            "doe", annotations={EXIT: "$(SIMTASK_PARAM_EXIT)"}, count=10, parameters=exits
        ),
    )
    batch = wait_batch(namespace, "doe", "Success", "Failed", within=10)
    status = batch["status"]
    assert status["phase"] == "Failed", status
    assert (status["failedIndexes"], status["succeededIndexes"]) == ("3,7", "0-2,4-6,8,9")
    assert status["reason"] == "InstancesFailed"
    assert condition(batch, "Failed")["status"] == "True"  # type: ignore[index]
    before = instances(namespace, "doe")
    assert {i: t["status"]["exitCode"] for i, t in before.items() if i in (3, 7)} == {3: 2, 7: 2}

    # The fix is in the template's pod annotation; raising retry runs the failed ones again
    # with it, as new attempts of the same instance tasks.
    patch_batch(
        namespace,
        "doe",
        {"retry": 1, "template": {"podTemplate": {"metadata": {"annotations": {EXIT: "0"}}}}},
    )
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Succeeded",
        f"--timeout={10 + HEADROOM:.0f}s",
        "sb/doe",
    )
    status = get_batch(namespace, "doe")["status"]
    assert (status["succeededIndexes"], status["failedIndexes"]) == ("0-9", "")
    after = instances(namespace, "doe")
    for index, task in after.items():
        assert task["metadata"]["uid"] == before[index]["metadata"]["uid"]
        if index in (3, 7):
            assert task["status"]["attempt"] == 2
            assert [a["phase"] for a in task["status"]["attempts"]] == ["Failed", "Success"]
            assert (
                pod_of(namespace, task["metadata"]["name"], 2)["metadata"]["annotations"][EXIT]
                == "0"
            )
        else:
            # Untouched: same attempt, same spec, same resourceVersion as before the retry.
            assert task["status"]["attempt"] == 1
            assert (
                task["metadata"]["resourceVersion"] == before[index]["metadata"]["resourceVersion"]
            )


def test_max_failed_instances_stops_dispatch_after_one_failure_too_many(namespace: str) -> None:
    apply(
        namespace,
        batch_manifest(
            "limit", annotations={EXIT: "2"}, count=10, parallelism=1, maxFailedInstances=1
        ),
    )
    batch = wait_batch(namespace, "limit", "Failed", "Success", within=10)
    status = batch["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "MaxFailedInstancesExceeded"), status
    assert status["failedIndexes"] == "0,1"
    assert status["instances"]["pending"] == 8
    # The second failure stopped dispatch: no third instance was ever made.
    assert sorted(instances(namespace, "limit")) == [0, 1]


def test_kill_kills_every_unfinished_instance(namespace: str) -> None:
    apply(namespace, batch_manifest("stop", duration="10m", count=6, parallelism=3))
    eventually(
        lambda: (get_batch(namespace, "stop").get("status") or {}).get("running") == 3,
        timeout=5 + HEADROOM,
        what="3 instances running",
    )
    patch_batch(namespace, "stop", {"kill": True})
    batch = wait_batch(namespace, "stop", "Killed", within=5)
    tasks = instances(namespace, "stop")
    assert sorted(tasks) == [0, 1, 2]
    assert {t["status"]["phase"] for t in tasks.values()} == {"Killed"}
    assert batch["status"]["instances"]["pending"] == 3
    assert condition(batch, "Failed")["reason"] == "Killed"  # type: ignore[index]


def test_hold_starts_nothing_new_and_the_ttl_deletes_the_batch_and_its_instances(
    namespace: str,
) -> None:
    apply(namespace, batch_manifest("held", count=3, hold=True, ttlAfterFinished="3s"))
    batch = wait_batch(namespace, "held", "Held", within=3)
    assert batch["status"]["instances"]["pending"] == 3
    assert instances(namespace, "held") == {}
    patch_batch(namespace, "held", {"hold": False})
    wait_batch(namespace, "held", "Success", within=8)
    assert len(instances(namespace, "held")) == 3
    # 3 s after it ended, the batch is deleted, and the garbage collector takes its tasks.
    eventually(
        lambda: kubectl("get", "sb", "held", "-n", namespace, check=False).returncode != 0,
        timeout=3 + HEADROOM,
        what="batch deleted",
    )
    eventually(
        lambda: instances(namespace, "held") == {}, timeout=HEADROOM, what="instances deleted"
    )
