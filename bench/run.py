#!/usr/bin/env python3
"""Benchmark the operator on the local cluster (hack/testbed) against plain Jobs.

    python bench/run.py                          # full size: 500 tasks + 500 Jobs, 200 spot tasks
    python bench/run.py --small                  # 50 + 50, 50 spot tasks: for a busy machine
    python bench/run.py --scenario lifecycle     # only tasks vs plain Jobs
    python bench/run.py --scenario preemption    # only the spot reclaim
    python bench/run.py --scenario lifecycle --tasks 10000 --in-flight 1000 --duration 5s
                                                 # scale: 10,000 tasks, 1,000 running at once

The cluster is the testbed's (TESTBED_DIR and the TESTBED_*_PORT variables, as hack/testbed
reads them); it is started, or grown, with enough nodes. The benchmark starts and stops its
own operator process on --metrics-port/--health-port. A Markdown table goes to stdout, the
full figures to a JSON file. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import kube as k
from bench import lifecycle, preemption
from bench.context import Context, log

#: Pods per node (kwok nodes have 110) the scale is computed for, leaving headroom.
PODS_PER_NODE = 90
#: Nodes per pool at --scale 1 (hack/testbed's cpu-standard and cpu-spot pools).
POOL_NODES = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", choices=("all", "lifecycle", "preemption"), default="all")
    p.add_argument(
        "--small",
        action="store_true",
        help="small run for a busy machine: --tasks 50 --spot-tasks 50 unless given",
    )
    p.add_argument(
        "--tasks", type=int, help="SimulationTasks, and as many plain Jobs (default 500)"
    )
    p.add_argument("--duration", default="20s", help="simulated run of each lifecycle pod")
    p.add_argument("--spot-tasks", type=int, help="tasks in the preemption scenario (default 200)")
    p.add_argument(
        "--spot-duration",
        default="120s",
        help="simulated run of each spot pod; must outlast starting them all",
    )
    p.add_argument(
        "--scale",
        type=int,
        help="hack/testbed --scale (default: enough nodes for every pod at once)",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        help="size the cluster for this many lifecycle pods at once (the rest wait for room, "
        "as on a busy cluster); default: all of them",
    )
    p.add_argument(
        "--no-testbed-up",
        action="store_true",
        help="use the running testbed as it is (do not start or grow it)",
    )
    p.add_argument("--down", action="store_true", help="hack/testbed down at the end")
    p.add_argument("--metrics-port", type=int, default=38000, help="the operator's metrics port")
    p.add_argument("--health-port", type=int, default=38080, help="the operator's health port")
    p.add_argument("--workers", type=int, help="the operator's --workers (default: its own)")
    p.add_argument("--create-threads", type=int, default=16, help="concurrent creates")
    p.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait after the last object is done before reading counters",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="limit on each wait (s)")
    p.add_argument("--json", type=Path, help="JSON output (default bench/results/<run>.json)")
    p.add_argument("--keep", action="store_true", help="keep the namespaces at the end")
    args = p.parse_args(argv)
    if args.tasks is None:
        args.tasks = 50 if args.small else 500
    if args.spot_tasks is None:
        args.spot_tasks = 50 if args.small else 200
    return args


def needed_scale(args: argparse.Namespace) -> int:
    """A scale at which every lifecycle pod fits on cpu-standard at once, and every spot pod on
    the two thirds of cpu-spot that survive the reclaim."""
    scale = 1
    if args.scenario in ("all", "lifecycle"):
        at_once = min(args.in_flight or args.tasks, args.tasks)
        scale = max(scale, math.ceil(at_once / (POOL_NODES * PODS_PER_NODE)))
    if args.scenario in ("all", "preemption"):
        scale = max(scale, math.ceil(args.spot_tasks / (2 * PODS_PER_NODE)))
    return scale


def environment() -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], capture_output=True, text=True, cwd=k.ROOT, check=False
            ).stdout.strip()
        except OSError:
            return ""

    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "operator")),
        "testbed_dir": str(k.STATE),
    }


def command_line() -> str:
    env = " ".join(f"{v}={shlex.quote(os.environ[v])}" for v in k.TESTBED_ENV if v in os.environ)
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "bench/run.py", *sys.argv[1:]])
    return f"{env} {cmd}".strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = time.strftime("%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    scale = args.scale or needed_scale(args)
    if not args.no_testbed_up:
        if not k.testbed_running() and (taken := k.ports_taken()):
            log(
                f"ports {taken} are taken by another process while the cluster of "
                f"TESTBED_DIR={k.STATE} is not running: set other TESTBED_*_PORT values"
            )
            return 2
        log(f"hack/testbed up --scale {scale} (TESTBED_DIR={k.STATE})")
        k.testbed("up", "--scale", str(scale))
    time.sleep(1)
    if not k.testbed_running():
        log(f"the cluster of TESTBED_DIR={k.STATE} is not (fully) running; see its logs/")
        return 2
    k.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(k.ROOT / "crds"))
    k.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/simulationtasks.simtask.dev",
        "crd/machinegroups.simtask.dev",
    )
    kube = k.Kube()
    ctx = Context(kube=kube, args=args, run_id=run_id)
    nodes = kube.request("GET", "/api/v1/nodes")["items"]
    result: dict[str, Any] = {
        "run_id": run_id,
        "command": command_line(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scale": scale,
        "nodes": len(nodes),
        "options": {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()},
        "environment": environment(),
    }
    out_path = args.json or (k.ROOT / "bench" / "results" / f"{run_id}.json")
    sections: list[str] = []
    status = 0
    try:
        if args.scenario in ("all", "lifecycle"):
            result["lifecycle"] = lifecycle.run(ctx)
            sections.append(
                f"### Lifecycle: {args.tasks} SimulationTasks vs {args.tasks} plain Jobs "
                f"({args.duration} pods)\n\n" + lifecycle.markdown(result["lifecycle"])
            )
        if args.scenario in ("all", "preemption"):
            result["preemption"] = preemption.run(ctx)
            sections.append(
                f"### Preemption: {args.spot_tasks} tasks on spot nodes "
                f"({args.spot_duration} pods), a third of the spot nodes reclaimed\n\n"
                + preemption.markdown(result["preemption"])
            )
            if not result["preemption"]["checks"]["ok"]:
                status = 1
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"error: {result['error']}")
        status = 2
    finally:
        if not args.keep:
            ctx.delete_namespaces(wait=False)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        if args.down:
            k.testbed("down")

    print(f"## simtask-operator benchmark ({run_id})\n")
    print(f"Command: `{result['command']}`\n")
    env = result["environment"]
    print(
        f"Machine: {env['cpus']} CPUs, load average at start {env['loadavg_at_start'][0]:.2f}; "
        f"testbed --scale {scale} ({len(nodes)} nodes); operator at {env['git_commit'][:12]}"
        f"{' (dirty)' if env['git_dirty'] else ''}.\n"
    )
    print("\n\n".join(sections))
    if "error" in result:
        print(f"\n**Run failed:** {result['error']}")
    print(f"\nJSON: {out_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
