"""The operator's HTTP endpoints, served from its own event loop: health probes and metrics.

`/healthz` (liveness) answers while the loop runs and every watch is alive; `/readyz`
(readiness) once the caches are synced. A standby replica is live and ready, but idle:
both carry `{"caches": ..., "leader": ...}` so a person or a test can tell which is which.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

#: Returns (live, ready, details).
HealthProbe = Callable[[], tuple[bool, bool, dict[str, Any]]]


def health_app(probe: HealthProbe) -> web.Application:
    """/healthz and /readyz from `probe`."""

    async def healthz(_: web.Request) -> web.Response:
        live, _ready, details = probe()
        return web.json_response(details, status=200 if live else 503)

    async def readyz(_: web.Request) -> web.Response:
        _live, ready, details = probe()
        return web.json_response(details, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def metrics_app() -> web.Application:
    """/metrics in the Prometheus text format."""

    async def serve(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving `app`; the caller cleans the runner up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
