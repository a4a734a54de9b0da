"""The `simtask-operator` command: run the operator against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import logging
import os

import kopf
from prometheus_client import start_http_server

from simtask import handlers


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
        help="serve /healthz on this port (0: off)",
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
        "--standalone",
        action="store_true",
        default=True,
        help="run without kopf peering (one replica; the default)",
    )
    parser.add_argument(
        "--all-namespaces",
        action="store_true",
        default=True,
        help="watch SimulationTasks in every namespace (the default)",
    )
    parser.add_argument("--log-level", default=os.environ.get("SIMTASK_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.bind)
    liveness = f"http://{args.bind}:{args.health_port}/healthz" if args.health_port else None
    assert handlers.FINALIZER  # the handlers module registers kopf's handlers on import
    kopf.run(
        standalone=True,
        clusterwide=True,
        liveness_endpoint=liveness,
        memo=kopf.Memo(workers=args.workers),
    )


if __name__ == "__main__":
    main()
