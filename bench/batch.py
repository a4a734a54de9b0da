"""A SimulationBatch of N instances against N plain Jobs of the same pods, in one run.

    python bench/batch.py --instances 10000 --parallelism 1000 --duration 5s --timeout 1800

Plain Jobs first, with the operator not running: the benchmark itself keeps at most
`parallelism` of them unfinished (a Job seen Complete lets the next one be created), which
is what a user's script over `kubectl create` would do. Then the operator is started and
one SimulationBatch with `count: N`, `parallelism` the same, is created; its pods are the
plain Jobs' pods plus the batch's environment variables. Measured: time from the first
create to the last Job Complete / the batch `Success`, the operator's CPU and peak RSS,
the batch object's size in bytes (its JSON as the API returns it, largest seen), how many
status writes it took, and the most unfinished instances any status showed.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import kube as k
from bench import manifests
from bench.context import Context, log
from bench.procstat import cpu_seconds

Obj = dict[str, Any]
POOL_NODES, PODS_PER_NODE = 3, 110


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instances", type=int, default=10_000)
    p.add_argument("--parallelism", type=int, default=1_000)
    p.add_argument("--duration", default="5s", help="simulated run of each pod")
    p.add_argument(
        "--scale", type=int, help="hack/testbed up --scale (default: room for parallelism pods)"
    )
    p.add_argument("--no-testbed-up", action="store_true")
    p.add_argument("--skip-plain", action="store_true", help="only the batch")
    p.add_argument("--metrics-port", type=int, default=38000)
    p.add_argument("--health-port", type=int, default=38080)
    p.add_argument("--workers", type=int)
    p.add_argument("--create-threads", type=int, default=16)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=3600.0, help="limit on each side (s)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def plain_jobs(ctx: Context, ns: str, n: int, window: int, duration: str, timeout: float) -> Obj:
    """Create n plain Jobs, keeping at most `window` unfinished; time to the last Complete."""
    done: set[str] = set()
    lock = threading.Condition()

    def on_job(etype: str, job: Obj, _: float) -> None:
        for c in (job.get("status") or {}).get("conditions") or ():
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
                with lock:
                    done.add(job["metadata"]["name"])
                    lock.notify_all()

    watch = k.Watch(ctx.kube, f"/apis/batch/v1/namespaces/{ns}/jobs", on_job)
    k.start_watches([watch])
    template = manifests.task(
        "plain", duration=duration, node_selector={manifests.POOL_LABEL: manifests.STANDARD_POOL}
    )
    cpu0 = cpu_seconds(k.component_pids())
    writes0 = k.api_writes(ctx.kube)
    path = f"/apis/batch/v1/namespaces/{ns}/jobs"
    t0 = time.time()
    deadline = time.monotonic() + timeout
    created = 0
    with ThreadPoolExecutor(max_workers=ctx.args.create_threads) as pool:
        while created < n:
            with lock:
                while created - len(done) >= window:
                    if not lock.wait(timeout=max(0.0, deadline - time.monotonic())):
                        raise TimeoutError(f"plain Jobs: {len(done)} of {n} done")
                room = min(window - (created - len(done)), n - created)
            objs = []
            for i in range(created, created + room):
                obj = json.loads(json.dumps(template))
                obj["metadata"]["name"] = f"plain-{i}"
                objs.append(manifests.plain_job(obj, ns))
            errors = [e for e in pool.map(lambda o: _create(ctx, path, o), objs) if e]
            if errors:
                raise RuntimeError(f"plain Job creates failed: {errors[:3]}")
            created += room
    with lock:
        while len(done) < n:
            if not lock.wait(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"plain Jobs: {len(done)} of {n} done")
    t1 = time.time()
    watch.stop()
    ctx.settle()
    cpu1 = cpu_seconds(k.component_pids())
    writes = k.diff_writes(writes0, k.api_writes(ctx.kube))
    return {
        "seconds": t1 - t0,
        "control_plane_cpu": sum(cpu1.get(p, 0) - cpu0.get(p, 0) for p in cpu1),
        "api_writes": sum(writes.values()),
    }


def _create(ctx: Context, path: str, obj: Obj) -> str | None:
    for attempt in range(8):
        try:
            ctx.kube.request("POST", path, obj)
            return None
        except k.KubeError as exc:
            if exc.status == 409:
                return None
            if exc.status not in (429, 500, 503, 504) or attempt == 7:
                return str(exc)
        except OSError as exc:
            if attempt == 7:
                return str(exc)
        time.sleep(0.2 * 2**attempt)
    return None


def batch_run(ctx: Context, ns: str, n: int, window: int, duration: str, timeout: float) -> Obj:
    """One SimulationBatch of n instances; poll it until Success."""
    op = ctx.operator("batch")
    op.start()
    try:
        template = manifests.task(
            "x", duration=duration, node_selector={manifests.POOL_LABEL: manifests.STANDARD_POOL}
        )
        batch = {
            "apiVersion": "simtask.dev/v1alpha1",
            "kind": "SimulationBatch",
            "metadata": {"name": "sweep"},
            "spec": {"count": n, "parallelism": window, "template": template["spec"]},
        }
        path = f"/apis/simtask.dev/v1alpha1/namespaces/{ns}/simulationbatches"
        usage0 = op.usage()
        cpu0 = cpu_seconds(k.component_pids())
        writes0 = k.api_writes(ctx.kube)
        t0 = time.time()
        ctx.kube.request("POST", path, batch)
        largest, most_unfinished, last = 0, 0, {}
        deadline = time.monotonic() + timeout
        said = time.monotonic()
        while True:
            raw = ctx.kube.http.request("GET", ctx.kube._url(f"{path}/sweep", None), retries=False)
            largest = max(largest, len(raw.data))
            last = json.loads(raw.data)
            st = last.get("status") or {}
            c = st.get("instances") or {}
            if c:
                unfinished = (
                    c.get("total", 0)
                    - c.get("pending", 0)
                    - st.get("succeeded", 0)
                    - st.get("failed", 0)
                )
                most_unfinished = max(most_unfinished, unfinished)
            if st.get("phase") in ("Success", "Failed", "Killed"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch not done: {json.dumps(c)}")
            if time.monotonic() - said > 30:
                done, running = st.get("succeeded"), st.get("running")
                log(f"batch: {st.get('phase')}, {done} succeeded, {running} running")
                said = time.monotonic()
            time.sleep(1.0)
        t1 = time.time()
        ctx.settle()
        usage1 = op.usage()
        cpu1 = cpu_seconds(k.component_pids())
        writes = k.diff_writes(writes0, k.api_writes(ctx.kube))
        status_writes = sum(
            v
            for (res, sub, _, _), v in writes.items()
            if res == "simulationbatches" and sub == "status"
        )
        return {
            "seconds": t1 - t0,
            "phase": last["status"]["phase"],
            "succeeded": last["status"].get("succeeded"),
            "batch_bytes_largest": largest,
            "batch_status_bytes_final": len(json.dumps(last["status"], separators=(",", ":"))),
            "batch_status_writes": status_writes,
            "most_unfinished_seen": most_unfinished,
            "operator_cpu": usage1.cpu_seconds - usage0.cpu_seconds,
            "operator_peak_rss_mib": usage1.peak_rss_bytes / 2**20,
            "operator_started_in": op.started_in,
            "control_plane_cpu": sum(cpu1.get(p, 0) - cpu0.get(p, 0) for p in cpu1),
            "api_writes": sum(writes.values()),
            "log": op.log_problems(),
        }
    finally:
        op.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = args.scale or max(1, math.ceil(args.parallelism / (POOL_NODES * PODS_PER_NODE)))
    if not args.no_testbed_up:
        log(f"hack/testbed up --scale {scale}")
        k.testbed("up", "--scale", str(scale))
    k.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(k.ROOT / "crds"))
    k.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/simulationbatches.simtask.dev"
    )
    run_id = time.strftime("%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    args.in_flight = args.parallelism
    ctx = Context(kube=k.Kube(), args=args, run_id=run_id)
    result: Obj = {
        "run_id": run_id,
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "scale": scale,
    }
    try:
        if not args.skip_plain:
            ns = ctx.create_namespace(f"bench-plain-{run_id}")
            log(f"{args.instances} plain Jobs, at most {args.parallelism} unfinished")
            result["plain"] = plain_jobs(
                ctx, ns, args.instances, args.parallelism, args.duration, args.timeout
            )
            log(f"plain Jobs: {result['plain']['seconds']:.0f} s")
        ns = ctx.create_namespace(f"bench-batch-{run_id}")
        log(f"a SimulationBatch of {args.instances}, parallelism {args.parallelism}")
        result["batch"] = batch_run(
            ctx, ns, args.instances, args.parallelism, args.duration, args.timeout
        )
        log(f"batch: {result['batch']['seconds']:.0f} s")
    finally:
        if not args.keep:
            ctx.delete_namespaces(wait=False)
        out = args.json or (k.ROOT / "bench" / "results" / f"batch-{run_id}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    b, p = result["batch"], result.get("plain")
    rows = [
        (
            "time from first create to all done (s)",
            f"{b['seconds']:.0f}",
            f"{p['seconds']:.0f}" if p else "—",
        ),
        (
            "control-plane CPU s",
            f"{b['control_plane_cpu']:.0f}",
            f"{p['control_plane_cpu']:.0f}" if p else "—",
        ),
        ("API writes (all clients)", str(b["api_writes"]), str(p["api_writes"]) if p else "—"),
        (
            "operator CPU s (ms per instance)",
            f"{b['operator_cpu']:.1f} ({1000 * b['operator_cpu'] / args.instances:.1f})",
            "—",
        ),
        ("operator peak RSS (MiB, VmHWM)", f"{b['operator_peak_rss_mib']:.0f}", "—"),
        ("batch object, largest seen (bytes of JSON)", str(b["batch_bytes_largest"]), "—"),
        ("batch status writes", str(b["batch_status_writes"]), "—"),
        ("most unfinished instances any status showed", str(b["most_unfinished_seen"]), "—"),
        (
            "operator log: WARNING / ERROR lines",
            f"{b['log']['warnings']} / {b['log']['errors']}",
            "—",
        ),
    ]
    print(f"Command: `{result['command']}` (testbed --scale {scale})\n")
    title = f"SimulationBatch ({args.instances}, parallelism {args.parallelism})"
    print(f"| metric | {title} | plain Jobs |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if b["phase"] == "Success" else 1


if __name__ == "__main__":
    sys.exit(main())
