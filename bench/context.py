"""What every scenario needs: the API, the run's options, namespaces, bulk creates, waiting."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.kube import KUBECONFIG, STATE, Kube, KubeError
from bench.procstat import OperatorProcess

Obj = dict[str, Any]


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


@dataclass
class Created:
    """A bulk create: when the first request went out and the last one came back."""

    first_sent: float
    last_done: float
    errors: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.last_done - self.first_sent


@dataclass
class Context:
    kube: Kube
    args: argparse.Namespace
    run_id: str
    namespaces: list[str] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return STATE / "logs"

    def operator(self, scenario: str) -> OperatorProcess:
        """The operator process for one scenario (not started)."""
        return OperatorProcess(
            kubeconfig=KUBECONFIG,
            metrics_port=self.args.metrics_port,
            health_port=self.args.health_port,
            workers=self.args.workers,
            log_path=self.log_dir / f"operator-bench-{self.run_id}-{scenario}.log",
        )

    def create_namespace(self, name: str) -> str:
        self.kube.request(
            "POST",
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"simtask.dev/bench": self.run_id}},
            },
        )
        self.namespaces.append(name)
        return name

    def delete_namespaces(self, *, wait: bool, timeout: float = 600.0) -> None:
        """Delete the run's namespaces; with `wait`, until they are gone (their objects too)."""
        for ns in self.namespaces:
            try:
                self.kube.request("DELETE", f"/api/v1/namespaces/{ns}")
            except KubeError as exc:
                if exc.status != 404:
                    log(f"could not delete namespace {ns}: {exc}")
        if wait:

            def gone() -> bool:
                return all(self._absent(f"/api/v1/namespaces/{ns}") for ns in self.namespaces)

            self.wait_for(gone, timeout, f"namespaces {', '.join(self.namespaces)} deleted")
        self.namespaces.clear()

    def cleanup(self, *paths: str, timeout: float = 300.0) -> None:
        """Delete the objects at `paths` and the run's namespaces, and wait until they are
        gone (unless --keep). Failures are reported, not raised: the figures are taken."""
        if self.args.keep:
            return
        try:
            for path in paths:
                try:
                    self.kube.request("DELETE", path)
                except KubeError as exc:
                    if exc.status != 404:
                        raise
            self.delete_namespaces(wait=True, timeout=timeout)
            self.wait_for(
                lambda: all(self._absent(p) for p in paths), timeout, f"{', '.join(paths)} deleted"
            )
        except (KubeError, TimeoutError, OSError) as exc:
            log(f"clean-up incomplete: {exc}")

    def _absent(self, path: str) -> bool:
        try:
            self.kube.request("GET", path)
        except KubeError as exc:
            return exc.status == 404
        return False

    def create_many(self, path: str, objs: list[Obj]) -> Created:
        """POST every object at once from a pool of threads, retrying throttled requests."""

        def create(obj: Obj) -> str | None:
            for attempt in range(8):
                try:
                    self.kube.request("POST", path, obj)
                    return None
                except KubeError as exc:
                    if exc.status == 409:
                        return f"{obj['metadata']['name']}: already exists"
                    if exc.status not in (429, 500, 503, 504) or attempt == 7:
                        return str(exc)
                except OSError as exc:  # A connection reset under load: try again.
                    if attempt == 7:
                        return str(exc)
                time.sleep(0.2 * 2**attempt)
            return None

        first = time.time()
        with ThreadPoolExecutor(max_workers=self.args.create_threads) as pool:
            results = list(pool.map(create, objs))
        return Created(first, time.time(), [r for r in results if r])

    def wait_for(
        self,
        done: Callable[[], bool],
        timeout: float,
        what: str,
        progress: Callable[[], str] | None = None,
    ) -> float:
        """Poll `done` until true; return the local time it became true. Fails after `timeout`."""
        start = time.monotonic()
        said = start
        while True:
            if done():
                return time.time()
            now = time.monotonic()
            if now - start > timeout:
                detail = f" ({progress()})" if progress else ""
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
            if progress and now - said >= 10:
                log(f"waiting for {what}: {progress()}")
                said = now
            time.sleep(0.2)

    def settle(self) -> None:
        """Give trailing writes (status updates, events) time to land before a scrape."""
        time.sleep(self.args.settle)
