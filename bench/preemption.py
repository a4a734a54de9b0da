"""Scenario `preemption`: tasks on spot nodes while a third of the spot nodes are reclaimed.

Every task runs on a MachineGroup of the testbed's spot pool. Once all are
ComputationStarted, a third of the spot nodes get a NoExecute taint at once, as a cloud
reclaiming them would: the control plane's taint manager deletes their pods (with a
DisruptionTarget condition), and the operator must mark those tasks SpotPreempted, resubmit
each as attempt 2 (after its backoff) and see them to Success elsewhere. Measured from the
taint; checked: no task lost (all end Success), none duplicated (one Job and one pod per
attempt, attempts numbered 1..n without gaps).
"""

from __future__ import annotations

import time
from typing import Any

from bench import kube as k
from bench import manifests, procstat
from bench import report as r
from bench.context import Context, log
from bench.lifecycle import operator_metrics
from bench.record import Recorder

Result = dict[str, Any]
#: The taint a reclaimed node gets (none of the tasks tolerates it).
RECLAIM_TAINT = {"key": "testbed.simtask.dev/reclaimed", "value": "true", "effect": "NoExecute"}
TASKS_PATH = "/apis/simtask.dev/v1alpha1"


def spot_nodes(ctx: Context) -> list[k.Obj]:
    body = ctx.kube.request(
        "GET",
        "/api/v1/nodes",
        query={"labelSelector": f"{manifests.POOL_LABEL}={manifests.SPOT_POOL}"},
    )
    return sorted(body["items"], key=lambda n: n["metadata"]["name"])


def set_reclaimed(ctx: Context, node: k.Obj, reclaimed: bool) -> None:
    """Add or remove the reclaim taint, keeping the node's other taints (a JSON patch with a test
    on resourceVersion, so a concurrent change to the taints is not overwritten)."""
    taints = [
        t
        for t in (node.get("spec") or {}).get("taints") or []
        if t.get("key") != RECLAIM_TAINT["key"]
    ]
    if reclaimed:
        taints.append(dict(RECLAIM_TAINT))
    patch = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": node["metadata"]["resourceVersion"],
        },
        {"op": "add", "path": "/spec/taints", "value": taints},
    ]
    ctx.kube.request(
        "PATCH",
        f"/api/v1/nodes/{node['metadata']['name']}",
        patch,
        content_type="application/json-patch+json",
    )


def untaint_all(ctx: Context) -> None:
    """Take the reclaim taint off every spot node (also what an interrupted run left)."""
    for node in spot_nodes(ctx):
        if any(t.get("key") == RECLAIM_TAINT["key"] for t in node["spec"].get("taints") or []):
            set_reclaimed(ctx, node, False)


def run(ctx: Context) -> Result:
    m, duration = ctx.args.spot_tasks, ctx.args.spot_duration
    group = f"bench-spot-{ctx.run_id}"
    untaint_all(ctx)
    ctx.kube.request("POST", f"{TASKS_PATH}/machinegroups", manifests.machine_group(group))
    ns = ctx.create_namespace(f"bench-spot-{ctx.run_id}")
    reclaimed: list[k.Obj] = []
    op = ctx.operator("preemption")
    try:
        op.start()
        result = _run(ctx, op, ns=ns, group=group, m=m, duration=duration, reclaimed=reclaimed)
    finally:
        for node in reclaimed:
            try:
                set_reclaimed(
                    ctx, ctx.kube.request("GET", f"/api/v1/nodes/{node['metadata']['name']}"), False
                )
            except k.KubeError as exc:
                log(f"could not untaint {node['metadata']['name']}: {exc}")
        # While the operator runs: it removes its finalizer from the MachineGroup.
        ctx.cleanup(f"{TASKS_PATH}/machinegroups/{group}")
        op.stop()
    result["operator"]["log"] = {"path": str(op.log_path), **op.log_problems()}
    return result


def _run(
    ctx: Context,
    op: procstat.OperatorProcess,
    *,
    ns: str,
    group: str,
    m: int,
    duration: str,
    reclaimed: list[k.Obj],
) -> Result:
    rec = Recorder()
    watches = [
        k.Watch(ctx.kube, f"/api/v1/namespaces/{ns}/pods", rec.on_pod),
        k.Watch(ctx.kube, f"/apis/batch/v1/namespaces/{ns}/jobs", rec.on_job),
        k.Watch(ctx.kube, f"{TASKS_PATH}/namespaces/{ns}/simulationtasks", rec.on_task),
    ]
    k.start_watches(watches)
    usage_before = op.usage()
    writes_before = k.api_writes(ctx.kube)
    tasks = [
        manifests.task(f"spot-{i:05d}", duration=duration, machine_group=group) for i in range(m)
    ]
    log(f"creating {m} SimulationTasks on MachineGroup {group} in {ns}")
    created = ctx.create_many(f"{TASKS_PATH}/namespaces/{ns}/simulationtasks", tasks)
    if created.errors:
        raise RuntimeError(f"{len(created.errors)} creates failed, e.g. {created.errors[:3]}")

    def phases() -> str:
        counts: dict[str, int] = {}
        for t in list(rec.tasks.values()):
            st = t.get("status") or {}
            key = f"{st.get('phase') or '(none)'}@{st.get('attempt') or 1}"
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{v} {p}" for p, v in sorted(counts.items()))

    t_started = ctx.wait_for(
        lambda: rec.count("task:ComputationStarted@1") >= m,
        ctx.args.timeout,
        f"{m} tasks ComputationStarted",
        phases,
    )
    early = rec.count("task:Success")
    if early:
        raise RuntimeError(
            f"{early} tasks ended before the reclaim: raise --spot-duration "
            f"(all {m} took {t_started - created.first_sent:.0f}s to start)"
        )
    log(f"all {m} ComputationStarted after {t_started - created.first_sent:.1f}s")

    nodes = spot_nodes(ctx)
    count = max(1, round(len(nodes) / 3))
    # Reclaim the nodes that run the most tasks, so the measure is about running work.
    load = {n["metadata"]["name"]: 0 for n in nodes}
    for (_name, attempt), node_name in dict(rec.nodes).items():
        if attempt == 1 and node_name in load:
            load[node_name] += 1
    chosen = sorted(nodes, key=lambda n: (-load[n["metadata"]["name"]], n["metadata"]["name"]))[
        :count
    ]
    chosen_names = {n["metadata"]["name"] for n in chosen}
    affected = sorted(
        name
        for (name, attempt), node in dict(rec.nodes).items()
        if attempt == 1 and node in chosen_names
    )
    log(
        f"reclaiming {count} of {len(nodes)} spot nodes ({', '.join(sorted(chosen_names))}): "
        f"{len(affected)} tasks affected"
    )
    t_taint = time.time()
    for target in chosen:
        set_reclaimed(ctx, target, True)
        reclaimed.append(target)
    t_tainted = time.time()

    def affected_in(mark: str) -> int:
        seen = rec.names_with(mark)
        return sum(1 for a in affected if a in seen)

    t_resubmitted = ctx.wait_for(
        lambda: affected_in("task:Submitted@2") >= len(affected),
        ctx.args.timeout,
        f"{len(affected)} affected tasks back in Submitted",
        phases,
    )
    log(f"all affected tasks resubmitted {t_resubmitted - t_taint:.1f}s after the taint")
    t_all = ctx.wait_for(
        lambda: rec.count("task:Success") + rec.count("task:Failed") >= m,
        ctx.args.timeout + _seconds(duration),
        f"{m} tasks done",
        phases,
    )
    ctx.settle()
    writes = k.diff_writes(writes_before, k.api_writes(ctx.kube))
    usage_after = op.usage()
    metrics = operator_metrics(op)
    for w in watches:
        w.stop()

    final = {name: t.get("status") or {} for name, t in ctx_list_tasks(ctx, ns).items()}
    checks = _check(rec, final, affected, m)

    def since_taint(mark: str) -> r.Summary:
        times = rec.times(mark)
        return r.summary(times[a] - t_taint for a in affected if a in times)

    disrupted = rec.times("pod:disrupted@1")
    resubmitted = rec.times("task:Submitted@2")
    by_resource = r.writes_by_resource(writes)
    return {
        "tasks": m,
        "duration": duration,
        "namespace": ns,
        "machine_group": group,
        "spot_nodes": len(nodes),
        "reclaimed_nodes": sorted(chosen_names),
        "affected": len(affected),
        "time_to_all_started_s": t_started - created.first_sent,
        "taint_patch_seconds": t_tainted - t_taint,
        "taint_to_pod_disrupted_s": since_taint("pod:disrupted@1"),
        "taint_to_spot_preempted_s": since_taint("task:SpotPreempted@1"),
        "taint_to_submitted_attempt2_s": since_taint("task:Submitted@2"),
        "pod_disrupted_to_submitted_attempt2_s": r.summary(
            resubmitted[a] - disrupted[a] for a in affected if a in resubmitted and a in disrupted
        ),
        "taint_to_all_affected_submitted_s": t_resubmitted - t_taint,
        "taint_to_computation_started_attempt2_s": since_taint("task:ComputationStarted@2"),
        "taint_to_success_attempt2_s": since_taint("task:Success@2"),
        "taint_to_all_success_s": t_all - t_taint,
        "checks": checks,
        "api_writes": by_resource,
        "api_writes_failed": r.failed_writes(writes),
        "api_writes_per_task": r.writes_per_object(by_resource, m),
        "operator": {
            "command": op.command(),
            "started_in_s": op.started_in,
            "peak_rss_bytes": usage_after.peak_rss_bytes,
            "cpu_seconds_total": usage_after.cpu_seconds,
            "cpu_seconds_during": usage_after.cpu_seconds - usage_before.cpu_seconds,
            "metrics": metrics,
        },
        "watch_errors": [e for w in watches for e in w.errors],
    }


def ctx_list_tasks(ctx: Context, ns: str) -> dict[str, k.Obj]:
    body = ctx.kube.request("GET", f"{TASKS_PATH}/namespaces/{ns}/simulationtasks")
    return {t["metadata"]["name"]: t for t in body["items"]}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit) and duration[: -len(unit)].replace(".", "", 1).isdigit():
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(f"not a duration: {duration!r}")


def _check(rec: Recorder, final: dict[str, dict[str, Any]], affected: list[str], m: int) -> Result:
    """No task lost, none duplicated, attempts as expected."""
    lost = sorted(name for name, st in final.items() if st.get("phase") != "Success")
    missing = m - len(final)
    duplicated: list[str] = []
    gaps: list[str] = []
    wrong_attempts: list[str] = []
    history_bad: list[str] = []
    affected_set = set(affected)
    for name, st in final.items():
        attempts = sorted({a for (kind, n, a) in rec.uids if kind == "job" and n == name})
        for kind in ("job", "pod"):
            for a in attempts:
                if len(rec.uids.get((kind, name, a), set())) > 1:
                    duplicated.append(
                        f"{name} attempt {a}: {len(rec.uids[(kind, name, a)])} {kind}s"
                    )
        if attempts != list(range(1, len(attempts) + 1)) or int(st.get("attempt") or 0) != len(
            attempts
        ):
            gaps.append(f"{name}: Jobs for attempts {attempts}, status.attempt {st.get('attempt')}")
        expected = 2 if name in affected_set else 1
        if len(attempts) != expected:
            wrong_attempts.append(f"{name}: {len(attempts)} attempts, expected {expected}")
        if name in affected_set:
            hist = [(h.get("phase"), h.get("attempt")) for h in st.get("history") or []]
            if ("SpotPreempted", 1) not in hist or ("Submitted", 2) not in hist:
                history_bad.append(f"{name}: history {hist}")
    ok = not (lost or missing or duplicated or gaps or wrong_attempts or history_bad)
    return {
        "ok": ok,
        "all_success": not lost and not missing,
        "lost": lost[:20],
        "lost_count": len(lost) + missing,
        "duplicated": duplicated[:20],
        "duplicated_count": len(duplicated),
        "attempt_gaps": gaps[:20],
        "unexpected_attempt_counts": wrong_attempts[:20],
        "history_missing_preemption": history_bad[:20],
    }


def markdown(res: Result) -> str:
    """The preemption table."""
    c = res["checks"]
    op = res["operator"]

    def stat(key: str) -> str:
        s = res[key]
        if not s.get("n"):
            return "—"
        return f"{r.fmt(s['p50'], 2)} / {r.fmt(s['p99'], 2)} / {r.fmt(s['max'], 2)} (n={s['n']})"

    rows = [
        ["tasks on spot nodes", str(res["tasks"])],
        [
            "spot nodes / reclaimed (NoExecute taint)",
            f"{res['spot_nodes']} / {len(res['reclaimed_nodes'])}",
        ],
        ["tasks affected", str(res["affected"])],
        ["first create → all ComputationStarted (s)", r.fmt(res["time_to_all_started_s"], 1)],
        ["taint → pod disrupted, p50 / p99 / max (s)", stat("taint_to_pod_disrupted_s")],
        ["taint → task SpotPreempted, p50 / p99 / max (s)", stat("taint_to_spot_preempted_s")],
        [
            "taint → task Submitted attempt 2, p50 / p99 / max (s)",
            stat("taint_to_submitted_attempt2_s"),
        ],
        [
            "pod disrupted → Submitted attempt 2, p50 / p99 / max (s)",
            stat("pod_disrupted_to_submitted_attempt2_s"),
        ],
        [
            "**taint → every affected task back in Submitted (s)**",
            r.fmt(res["taint_to_all_affected_submitted_s"], 2),
        ],
        [
            "taint → ComputationStarted attempt 2, p50 / p99 / max (s)",
            stat("taint_to_computation_started_attempt2_s"),
        ],
        ["taint → Success attempt 2, p50 / p99 / max (s)", stat("taint_to_success_attempt2_s")],
        ["taint → all tasks Success (s)", r.fmt(res["taint_to_all_success_s"], 1)],
        ["lost (not Success)", str(c["lost_count"])],
        ["duplicated (>1 Job or pod for an attempt)", str(c["duplicated_count"])],
        [
            "attempt numbering gaps / unexpected attempt counts",
            f"{len(c['attempt_gaps'])} / {len(c['unexpected_attempt_counts'])}",
        ],
        [
            "API writes per task (simulationtasks+jobs+pods+events)",
            r.fmt(res["api_writes_per_task"].get("total (simulationtasks+jobs+pods+events)")),
        ],
        [
            "operator peak RSS (MiB) / CPU s during",
            f"{op['peak_rss_bytes'] / 2**20:.1f} / {op['cpu_seconds_during']:.1f}",
        ],
        [
            "operator log: WARNING / ERROR lines",
            f"{op['log']['warnings']} / {op['log']['errors']}",
        ],
        [
            "verdict",
            "OK: none lost, none duplicated" if c["ok"] else "**FAILED** (see JSON checks)",
        ],
    ]
    return r.table(["preemption", "value"], rows)
