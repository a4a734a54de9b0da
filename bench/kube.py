"""The local cluster as the benchmark sees it: the testbed, raw JSON requests, watches, metrics.

Requests go through the kubernetes client's own connection pool (credentials from the
testbed's kubeconfig) but skip its model classes: decoding thousands of watch events into
V1Pod objects would cost the benchmark more CPU than the operator it measures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
#: The testbed's state directory: TESTBED_DIR, as hack/testbed reads it.
STATE = Path(os.environ.get("TESTBED_DIR", ROOT / ".testbed"))
KUBECONFIG = STATE / "kubeconfig"
#: The testbed's own variables, echoed in the report so a run can be repeated exactly.
TESTBED_ENV = (
    "TESTBED_DIR",
    "TESTBED_APISERVER_PORT",
    "TESTBED_ETCD_PORT",
    "TESTBED_CM_PORT",
    "TESTBED_SCHEDULER_PORT",
    "TESTBED_KWOK_PORT",
)

Obj = dict[str, Any]
#: Called with (event type, object, local receive time); type LIST for the initial list.
Handler = Callable[[str, Obj, float], None]


class KubeError(RuntimeError):
    """A request the API server refused."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        try:
            message = str(json.loads(body).get("message"))
        except ValueError:
            message = body[:300].decode(errors="replace")
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


def testbed(*args: str) -> str:
    """Run hack/testbed with this process's environment (TESTBED_DIR and ports)."""
    proc = subprocess.run(
        [str(ROOT / "hack" / "testbed"), *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/testbed {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


#: hack/testbed's ports: (variable, default, extra ports at fixed offsets from it).
TESTBED_PORTS = (
    ("TESTBED_ETCD_PORT", 23790, (1, 10)),
    ("TESTBED_APISERVER_PORT", 16443, ()),
    ("TESTBED_CM_PORT", 20257, ()),
    ("TESTBED_SCHEDULER_PORT", 20259, ()),
    ("TESTBED_KWOK_PORT", 20250, ()),
)


def testbed_running() -> bool:
    """Whether every component of this TESTBED_DIR's cluster runs (`hack/testbed status`)."""
    proc = subprocess.run(
        [str(ROOT / "hack" / "testbed"), "status"], capture_output=True, check=False
    )
    return proc.returncode == 0


def ports_taken() -> list[int]:
    """The testbed ports something already listens on.

    hack/testbed checks a component's health on its port, so a port held by another
    cluster makes `up` talk to that cluster: check before starting one.
    """
    taken = []
    for var, default, offsets in TESTBED_PORTS:
        base = int(os.environ.get(var, default))
        for port in (base, *(base + o for o in offsets)):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    taken.append(port)
    return taken


def kubectl(*args: str) -> str:
    """Run the testbed's kubectl against the testbed's cluster."""
    path = ""
    for line in testbed("env").splitlines():
        if line.startswith("export PATH="):
            path = line.removeprefix("export PATH=").split(":")[0]
    proc = subprocess.run(
        [f"{path}/kubectl", "--kubeconfig", str(KUBECONFIG), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def component_pids() -> dict[str, int]:
    """The pids of the testbed's control-plane processes, from its pid files."""
    pids: dict[str, int] = {}
    for pidfile in sorted((STATE / "pids").glob("*.pid")):
        try:
            pids[pidfile.stem] = int(pidfile.read_text())
        except (OSError, ValueError):
            continue
    return pids


class Kube:
    """GET/POST/PATCH/DELETE on API paths with JSON in and out, thread-safe."""

    def __init__(self, kubeconfig: Path = KUBECONFIG, pool: int = 64) -> None:
        conf = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)  # type: ignore[no-untyped-call]
        conf.connection_pool_maxsize = pool
        self._api = client.ApiClient(conf)
        self.http: urllib3.PoolManager = self._api.rest_client.pool_manager
        self.host = str(conf.host)

    def _url(self, path: str, query: dict[str, str] | None) -> str:
        return self.host + path + ("?" + urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> Any:
        """One request; the parsed JSON answer (None when empty). Raises KubeError."""
        data = json.dumps(body).encode() if body is not None else None
        resp = self.http.request(
            method,
            self._url(path, query),
            body=data,
            headers={"Content-Type": content_type, "Accept": "application/json"},
            timeout=urllib3.Timeout(connect=10, read=timeout),
            retries=False,
        )
        if resp.status >= 400:
            raise KubeError(method, path, resp.status, resp.data)
        return json.loads(resp.data) if resp.data else None

    def text(self, path: str) -> str:
        """GET a non-JSON path such as /metrics."""
        resp = self.http.request("GET", self._url(path, None), timeout=60.0, retries=False)
        if resp.status >= 400:
            raise KubeError("GET", path, resp.status, resp.data)
        return str(resp.data.decode())

    def stream(self, path: str, query: dict[str, str], timeout: float) -> Iterator[bytes]:
        """The lines of a streaming GET (a watch), as they arrive."""
        resp = self.http.request(
            "GET",
            self._url(path, query),
            headers={"Accept": "application/json"},
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=timeout),
            retries=False,
        )
        try:
            if resp.status >= 400:
                raise KubeError("GET", path, resp.status, resp.read())
            buffer = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                while (cut := buffer.find(b"\n")) >= 0:
                    line, buffer = buffer[:cut], buffer[cut + 1 :]
                    if line.strip():
                        yield line
        finally:
            # A watch may be left half read: close the connection rather than reuse it.
            resp.close()
            resp.release_conn()


class Watch(threading.Thread):
    """List, then watch one collection, handing every object to `handler` with its receive time.

    The receive time is taken when the event's line arrives, before any other work, so
    two watches in this process measure the delay between what they show.
    """

    def __init__(
        self, kube: Kube, path: str, handler: Handler, *, label_selector: str | None = None
    ) -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        self.kube = kube
        self.path = path
        self.handler = handler
        self.label_selector = label_selector
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.errors: list[str] = []

    def _query(self, **extra: str) -> dict[str, str]:
        query = dict(extra)
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        return query

    def _list(self) -> str:
        cont = ""
        while True:
            query = self._query(limit="500", **({"continue": cont} if cont else {}))
            body = self.kube.request("GET", self.path, query=query)
            now = time.time()
            for item in body.get("items") or []:
                self.handler("LIST", item, now)
            cont = str(body["metadata"].get("continue") or "")
            if not cont:
                return str(body["metadata"]["resourceVersion"])

    def run(self) -> None:
        rv = ""
        while not self.stopped.is_set():
            try:
                if not rv:
                    rv = self._list()
                    self.synced.set()
                query = self._query(
                    watch="true",
                    resourceVersion=rv,
                    allowWatchBookmarks="true",
                    timeoutSeconds="20",
                )
                for line in self.kube.stream(self.path, query, timeout=40):
                    now = time.time()
                    event = json.loads(line)
                    etype, obj = str(event.get("type")), event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") != 410:
                            self.errors.append(str(obj.get("message")))
                        rv = ""  # Expired or broken: list again.
                        break
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if etype != "BOOKMARK":
                        self.handler(etype, obj, now)
                    if self.stopped.is_set():
                        return
            except Exception as exc:  # A dropped connection: note it, go on from rv.
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopped.set()


def start_watches(watches: list[Watch], timeout: float = 60.0) -> None:
    """Start watches and wait for their first list."""
    for w in watches:
        w.start()
    deadline = time.monotonic() + timeout
    for w in watches:
        if not w.synced.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"{w.name}: no first list after {timeout:.0f}s: {w.errors[-3:]}")


def parse_metrics(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric `name` in Prometheus text format, as (labels, value)."""
    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


#: The verbs that write. APPLY is server-side apply (a PATCH with another content type).
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")
WriteKey = tuple[str, str, str, str]  # (resource, subresource, verb, code)


def api_writes(kube: Kube) -> dict[WriteKey, float]:
    """kube-apiserver's own count of write requests so far, by resource, subresource, verb, code."""
    counts: dict[WriteKey, float] = {}
    for labels, value in parse_metrics(kube.text("/metrics"), "apiserver_request_total"):
        if labels.get("verb") not in WRITE_VERBS:
            continue
        key = (
            labels.get("resource", ""),
            labels.get("subresource", ""),
            labels["verb"],
            labels.get("code", ""),
        )
        counts[key] = counts.get(key, 0.0) + value
    return counts


def diff_writes(before: dict[WriteKey, float], after: dict[WriteKey, float]) -> dict[WriteKey, int]:
    """The writes made between two scrapes."""
    return {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0) > 0}
