"""Scenario `lifecycle`: N SimulationTasks against N plain Jobs with the same pods, in one run.

The plain Jobs go first, before the operator is started: that baseline is the cluster
as it is without the operator (no process of ours competing for CPU, no watches of ours),
and the operator then starts on a cluster already holding N finished Jobs and pods that
its label-selected watches must not see. Each phase has its own namespace; the cluster is
left to settle between them, and apiserver counters are read around each phase alone.
"""

from __future__ import annotations

import time
from typing import Any

from bench import kube as k
from bench import manifests, procstat
from bench import report as r
from bench.context import Context, log
from bench.record import Recorder

Result = dict[str, Any]


def _first_of(rec: Recorder, marks: list[str]) -> dict[str, float]:
    """Per name, the earliest time any of `marks` was seen."""
    out: dict[str, float] = {}
    for mark in marks:
        for name, t in rec.times(mark).items():
            out[name] = min(t, out.get(name, t))
    return out


def _measure(
    rec: Recorder,
    *,
    n: int,
    parent: str,
    child: str,
    running: list[str],
    done: str,
    first_sent: float,
) -> Result:
    """Admission, status latency and total time from what the watches saw.

    `parent` is what the user creates (task, or plain Job), `child` what admitting it makes
    (the task's Job, or the plain Job's pod).
    """
    suffix = "" if parent == "task" else "@1"
    p_added, c_added = rec.times(f"{parent}:added{suffix}"), rec.times(f"{child}:added@1")
    p_created, c_created = rec.times(f"{parent}:created{suffix}"), rec.times(f"{child}:created@1")
    done_t = rec.times(done)
    # creationTimestamps have a resolution of one second: a window under 1 s reads as 0.
    window_created = (max(c_created.values()) - min(p_created.values())) if c_created else None
    window_watch = (max(c_added.values()) - min(p_added.values())) if c_added else None
    pod_running, pod_succeeded = rec.times("pod:Running@1"), rec.times("pod:Succeeded@1")
    shown_running = _first_of(rec, running)
    admission = r.deltas(p_added, c_added)
    running_lat = r.deltas(pod_running, shown_running)
    done_lat = r.deltas(pod_succeeded, done_t)
    return {
        "admitted": len(c_added),
        "admission_latency_s": r.summary(admission),
        "admission_latency_created_s": r.summary(r.deltas(p_created, c_created)),
        "admission_window_created_s": window_created,
        "admitted_per_second": (len(c_created) / max(window_created, 1.0))
        if window_created is not None
        else None,
        "admission_window_watch_s": window_watch,
        "admitted_per_second_watch": (len(c_added) / window_watch) if window_watch else None,
        "running_shown_latency_s": r.summary(running_lat),
        "running_marks": running,
        "running_shown_directly": rec.count(running[0]),
        "done_shown_latency_s": r.summary(done_lat),
        "done": len(done_t),
        "time_to_all_done_s": (max(done_t.values()) - first_sent) if len(done_t) == n else None,
        "samples_s": {
            "admission": sorted(round(v, 4) for v in admission),
            "running_shown": sorted(round(v, 4) for v in running_lat),
            "done_shown": sorted(round(v, 4) for v in done_lat),
        },
    }


def _phase(
    ctx: Context,
    *,
    ns: str,
    objs: list[dict[str, Any]],
    path: str,
    kind: str,
    operator: procstat.OperatorProcess | None,
) -> Result:
    """Create `objs` at once, follow them to the end, and measure what it cost."""
    n = len(objs)
    rec = Recorder()
    watches = [
        k.Watch(ctx.kube, f"/api/v1/namespaces/{ns}/pods", rec.on_pod),
        k.Watch(ctx.kube, f"/apis/batch/v1/namespaces/{ns}/jobs", rec.on_job),
    ]
    if kind == "task":
        watches.append(
            k.Watch(
                ctx.kube, f"/apis/simtask.dev/v1alpha1/namespaces/{ns}/simulationtasks", rec.on_task
            )
        )
    k.start_watches(watches)
    pids = k.component_pids()
    if operator is not None:
        pids["simtask-operator"] = operator.pid
    cpu_before = procstat.cpu_seconds(pids)
    writes_before = k.api_writes(ctx.kube)

    log(f"creating {n} {'SimulationTasks' if kind == 'task' else 'plain Jobs'} in {ns}")
    created = ctx.create_many(path, objs)
    if created.errors:
        raise RuntimeError(f"{len(created.errors)} creates failed, e.g. {created.errors[:3]}")
    log(f"created {n} in {created.seconds:.1f}s")
    done_mark = "task:Success" if kind == "task" else "job:complete@1"
    failed_mark = "task:Failed" if kind == "task" else "job:failed@1"

    def progress() -> str:
        if kind == "task":
            phases: dict[str, int] = {}
            for t in list(rec.tasks.values()):
                ph = str((t.get("status") or {}).get("phase") or "(none)")
                phases[ph] = phases.get(ph, 0) + 1
            return ", ".join(f"{v} {p}" for p, v in sorted(phases.items()))
        return (
            f"{rec.count('pod:added@1')} pods, {rec.count('pod:Running@1')} running, "
            f"{rec.count('job:complete@1')} complete"
        )

    timeout = ctx.args.timeout
    ctx.wait_for(
        lambda: rec.count(done_mark) + rec.count(failed_mark) >= n,
        timeout,
        f"{n} {kind}s done",
        progress,
    )
    log(f"all {n} done: {progress()}")
    ctx.settle()
    writes = k.diff_writes(writes_before, k.api_writes(ctx.kube))
    cpu_after = procstat.cpu_seconds(pids)
    for w in watches:
        w.stop()

    if kind == "task":
        result = _measure(
            rec,
            n=n,
            parent="task",
            child="job",
            running=["task:ComputationStarted@1", "task:ComputationEnded@1", "task:Success@1"],
            done="task:Success@1",
            first_sent=created.first_sent,
        )
    else:
        result = _measure(
            rec,
            n=n,
            parent="job",
            child="pod",
            running=["job:ready@1"],
            done="job:complete@1",
            first_sent=created.first_sent,
        )
    by_resource = r.writes_by_resource(writes)
    duplicates = sorted(
        name
        for (kind_, name, _a), uids in rec.uids.items()
        if kind_ == ("job" if kind == "task" else "pod") and len(uids) > 1
    )
    result.update(
        {
            "objects": n,
            "failed": rec.count(failed_mark),
            "duplicates": duplicates,
            "create_seconds": created.seconds,
            "created_per_second": n / created.seconds if created.seconds else None,
            "api_writes": by_resource,
            "api_writes_failed": r.failed_writes(writes),
            "api_writes_per_object": r.writes_per_object(by_resource, n),
            "cpu_seconds": {
                name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before
            },
            "watch_errors": [e for w in watches for e in w.errors],
        }
    )
    return result


def run(ctx: Context) -> Result:
    """Plain Jobs first (operator not running), then SimulationTasks (operator running)."""
    n, duration = ctx.args.tasks, ctx.args.duration
    tasks = [
        manifests.task(
            f"bench-{i:05d}",
            duration=duration,
            node_selector={manifests.POOL_LABEL: manifests.STANDARD_POOL},
        )
        for i in range(n)
    ]
    ns_jobs = ctx.create_namespace(f"bench-jobs-{ctx.run_id}")
    ns_tasks = ctx.create_namespace(f"bench-tasks-{ctx.run_id}")
    jobs = [manifests.plain_job(t, ns_jobs) for t in tasks]
    time.sleep(1)

    plain = _phase(
        ctx,
        ns=ns_jobs,
        objs=jobs,
        path=f"/apis/batch/v1/namespaces/{ns_jobs}/jobs",
        kind="job",
        operator=None,
    )
    log("plain Jobs done; starting the operator")
    op = ctx.operator("lifecycle")
    op.start()
    try:
        before = op.usage()
        ops = _phase(
            ctx,
            ns=ns_tasks,
            objs=tasks,
            path=f"/apis/simtask.dev/v1alpha1/namespaces/{ns_tasks}/simulationtasks",
            kind="task",
            operator=op,
        )
        after = op.usage()
        ops["operator"] = {
            "command": op.command(),
            "started_in_s": op.started_in,
            "peak_rss_bytes": after.peak_rss_bytes,
            "rss_bytes_end": after.rss_bytes,
            "rss_bytes_before": before.rss_bytes,
            "cpu_seconds_total": after.cpu_seconds,
            "cpu_seconds_during": after.cpu_seconds - before.cpu_seconds,
            "metrics": operator_metrics(op),
        }
    finally:
        # While the operator runs: whatever finalizers it puts on its objects get removed.
        ctx.cleanup()
        op.stop()
        ops_log = op.log_problems()
    ops["operator"]["log"] = {"path": str(op.log_path), **ops_log}
    return {
        "objects": n,
        "duration": duration,
        "namespaces": [ns_jobs, ns_tasks],
        "order": "plain Jobs first, with the operator not running; then SimulationTasks",
        "plain": plain,
        "operator": ops,
    }


def operator_metrics(op: procstat.OperatorProcess) -> dict[str, float]:
    """The operator's own counters that say whether it struggled."""
    text = op.metrics()
    out: dict[str, float] = {}
    for name in (
        "simtask_reconcile_duration_seconds_count",
        "simtask_reconcile_duration_seconds_sum",
        "simtask_reconcile_errors_total",
        "simtask_api_errors_total",
        "simtask_watch_restarts_total",
        "simtask_transitions_total",
        "simtask_resubmissions_total",
    ):
        samples = k.parse_metrics(text, name)
        out[name] = sum(v for _labels, v in samples)
    for labels, v in k.parse_metrics(text, "simtask_api_errors_total"):
        if v:
            out[
                f"simtask_api_errors_total{{{labels.get('verb')},{labels.get('resource')},"
                f"{labels.get('code')}}}"
            ] = v
    return out


def markdown(res: Result) -> str:
    """The lifecycle table: operator against plain Jobs, with ratios."""
    o, p = res["operator"], res["plain"]
    op = o["operator"]
    n = res["objects"]

    def row(label: str, ov: Any, pv: Any, rat: float | None = None, digits: int = 2) -> list[str]:
        return [label, r.fmt(ov, digits), r.fmt(pv, digits), r.fmt_ratio(rat)]

    def lat(label: str, key: str, stat: str) -> list[str]:
        ov, pv = o[key][stat], p[key][stat]
        return row(label, ov, pv, r.ratio(ov, pv), 3)

    rows = [
        row("objects created at once", n, n),
        row(
            "client create window (s)",
            o["create_seconds"],
            p["create_seconds"],
            r.ratio(o["create_seconds"], p["create_seconds"]),
        ),
        row(
            "admitted per second (watch: first created seen → last Job/pod seen)",
            o["admitted_per_second_watch"],
            p["admitted_per_second_watch"],
            r.ratio(o["admitted_per_second_watch"], p["admitted_per_second_watch"]),
            1,
        ),
        row(
            "admission window from creationTimestamps (s, 1-s resolution)",
            o["admission_window_created_s"],
            p["admission_window_created_s"],
        ),
        row(
            "admitted per second from creationTimestamps (window ≥ 1 s)",
            o["admitted_per_second"],
            p["admitted_per_second"],
            r.ratio(o["admitted_per_second"], p["admitted_per_second"]),
            1,
        ),
        lat("admission latency p50 (s)", "admission_latency_s", "p50"),
        lat("admission latency p99 (s)", "admission_latency_s", "p99"),
        lat(
            "pod Running → shown p50 (s) [task ComputationStarted | Job ready]",
            "running_shown_latency_s",
            "p50",
        ),
        lat("pod Running → shown p99 (s)", "running_shown_latency_s", "p99"),
        lat(
            "pod Succeeded → shown p50 (s) [task Success | Job Complete]",
            "done_shown_latency_s",
            "p50",
        ),
        lat("pod Succeeded → shown p99 (s)", "done_shown_latency_s", "p99"),
        row(
            "time from first create to all done (s)",
            o["time_to_all_done_s"],
            p["time_to_all_done_s"],
            r.ratio(o["time_to_all_done_s"], p["time_to_all_done_s"]),
            1,
        ),
    ]
    keys = sorted(
        set(o["api_writes_per_object"]) | set(p["api_writes_per_object"]),
        key=lambda s: (s.startswith("total"), r.family_of(s), s),
    )
    for key in keys:
        if key.startswith("other"):
            continue
        if r.family_of(key) == "other" and not key.startswith("total"):
            continue
        ov, pv = o["api_writes_per_object"].get(key, 0.0), p["api_writes_per_object"].get(key, 0.0)
        rows.append(row(f"API writes per object: {key}", ov, pv, r.ratio(ov, pv)))
    ov = o["api_writes_per_object"].get("other (all)", 0.0)
    pv = p["api_writes_per_object"].get("other (all)", 0.0)
    rows.append(row("API writes per object: other resources (background: leases, nodes)", ov, pv))
    cp_o = sum(v for name, v in o["cpu_seconds"].items() if name != "simtask-operator")
    cp_p = sum(p["cpu_seconds"].values())
    rows += [
        row(
            "control-plane CPU s (etcd+apiserver+kcm+scheduler+kwok)",
            cp_o,
            cp_p,
            r.ratio(cp_o, cp_p),
            1,
        ),
        row(
            "kube-apiserver CPU s",
            o["cpu_seconds"].get("kube-apiserver"),
            p["cpu_seconds"].get("kube-apiserver"),
            r.ratio(o["cpu_seconds"].get("kube-apiserver"), p["cpu_seconds"].get("kube-apiserver")),
            1,
        ),
        row(
            "operator CPU s during the phase (ms per task)",
            f"{op['cpu_seconds_during']:.1f} ({1000 * op['cpu_seconds_during'] / n:.1f})",
            None,
        ),
        row("operator CPU s total incl. start-up", op["cpu_seconds_total"], None, None, 1),
        row("operator peak RSS (MiB, VmHWM)", op["peak_rss_bytes"] / 2**20, None, None, 1),
        row(
            "operator log: WARNING / ERROR lines",
            f"{op['log']['warnings']} / {op['log']['errors']}",
            None,
        ),
        row(
            "not done / failed / duplicated",
            f"{n - o['done']} / {o['failed']} / {len(o['duplicates'])}",
            f"{n - p['done']} / {p['failed']} / {len(p['duplicates'])}",
        ),
    ]
    head = ["metric", "SimulationTasks (operator)", "plain Jobs", "operator / plain"]
    out = [r.table(head, rows)]
    skipped = n - o["running_shown_directly"]
    if skipped:
        out.append(
            f"\n{skipped} tasks were never seen in ComputationStarted (their first status "
            "after the pod ran was a later phase; that phase's time is used)."
        )
    bad = {
        **{f"operator: {k_}": v for k_, v in o["api_writes_failed"].items()},
        **{f"plain: {k_}": v for k_, v in p["api_writes_failed"].items()},
    }
    if bad:
        out.append(
            "\nWrites answered with an error code: "
            + ", ".join(f"{k_} x{v}" for k_, v in bad.items())
        )
    return "\n".join(out)
