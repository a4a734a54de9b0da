"""The `simtask-operator` command: run the operator against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from simtask import metrics
from simtask.kube import Kube, load_client
from simtask.leader import LeaderElector
from simtask.reconciler import Controller
from simtask.server import health_app, metrics_app, serve

logger = logging.getLogger("simtask")

LEASE_NAME = "simtask-operator"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _own_namespace() -> str:
    """The namespace of the pod we run in, else `default`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return _SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _namespace_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        if not _DNS_LABEL.fullmatch(name):
            raise argparse.ArgumentTypeError(f"{name!r} is not a namespace name")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simtask-operator", description=__doc__)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("SIMTASK_METRICS_PORT", "8000")),
        help="serve Prometheus metrics on this port (0: off)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(os.environ.get("SIMTASK_HEALTH_PORT", "8080")),
        help="serve /healthz and /readyz on this port (0: off)",
    )
    parser.add_argument(
        "--bind",
        default=os.environ.get("SIMTASK_BIND", "0.0.0.0"),
        help="address the metrics and health endpoints listen on",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SIMTASK_WORKERS", "32")),
        help="tasks reconciled at once",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("SIMTASK_LEADER_ELECT", "false").lower() == "true",
        help="run as one of several replicas: only the holder of the Lease "
        f"{LEASE_NAME!r} acts, the others stand by with warm caches",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("SIMTASK_LEADER_ELECTION_NAMESPACE") or _own_namespace(),
        help="namespace of the Lease (default: the pod's own namespace, else 'default')",
    )
    parser.add_argument(
        "--lease-duration",
        type=float,
        default=_env_float("SIMTASK_LEASE_DURATION", 10.0),
        help="seconds a standby waits after the leader's last renewal before taking over",
    )
    parser.add_argument(
        "--watch-read-timeout",
        type=float,
        default=_env_float("SIMTASK_WATCH_READ_TIMEOUT", 270.0),
        help="a watch that sends nothing for this many seconds is taken as dead (a half-open "
        "connection) and started again; the server is asked to end each watch after 80%% of "
        "it, so a healthy watch never stays silent that long",
    )
    parser.add_argument(
        "--namespaces",
        type=_namespace_list,
        default=_namespace_list(os.environ.get("SIMTASK_NAMESPACES", "")),
        help="serve only these namespaces (comma-separated): SimulationTasks, Jobs, pods and "
        "events are watched in them alone, so Roles there are all it needs besides its "
        "cluster-wide reads of nodes and MachineGroups (default: the whole cluster)",
    )
    parser.add_argument(
        "--check-secret-inputs",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("SIMTASK_CHECK_SECRET_INPUTS", "true").lower() == "true",
        help="look Secret inputs up before starting a task (needs `get` on Secrets); with "
        "--no-check-secret-inputs the kubelet's mount failure tells a task that one is missing",
    )
    parser.add_argument("--log-level", default=os.environ.get("SIMTASK_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT (0), or until the Lease is lost or a part dies (1)."""
    api = await load_client()
    kube = Kube(api)
    controller = Controller(
        kube,
        workers=args.workers,
        read_timeout=args.watch_read_timeout,
        namespaces=args.namespaces,
        check_secret_inputs=args.check_secret_inputs,
    )
    if args.namespaces:
        logger.info("serving namespaces %s", ", ".join(args.namespaces))
    elector: LeaderElector | None = None
    if args.leader_elect:
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        elector = LeaderElector(
            kube,
            namespace=args.leader_election_namespace,
            name=LEASE_NAME,
            identity=identity,
            lease_duration=args.lease_duration,
            renew_deadline=args.lease_duration * 0.7,
            retry_period=max(args.lease_duration * 0.2, 1.0),
        )

    def probe() -> tuple[bool, bool, dict[str, Any]]:
        synced = controller.synced.is_set()
        leader = elector.leading.is_set() if elector is not None else synced
        live = not synced or controller.informers_alive()
        return live, synced, {"caches": synced, "leader": leader, "watches": live}

    runners = []
    if args.health_port:
        runners.append(await serve(health_app(probe), args.bind, args.health_port))
    if args.metrics_port:
        runners.append(await serve(metrics_app(), args.bind, args.metrics_port))

    async def lead() -> None:
        metrics.LEADER.set(1)
        try:
            await controller.run()
        finally:
            metrics.LEADER.set(0)

    async def operate() -> None:
        await controller.start()
        if elector is None:
            await lead()
        else:
            logger.info("standing by for Lease %s/%s", elector.namespace, LEASE_NAME)
            await elector.run(lead)
            raise RuntimeError("lost the leader Lease")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    work = asyncio.create_task(operate(), name="operate")
    stopped = asyncio.create_task(stop.wait(), name="signal")
    await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if work.done():
        exc = work.exception()
        logger.error("the operator stopped: %r", exc)
        code = 1
    else:
        logger.info("stopping")
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    stopped.cancel()
    await controller.stop()
    for runner in runners:
        await runner.cleanup()
    await api.close()
    return code


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
