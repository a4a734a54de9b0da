"""A TCP proxy in front of the API server that can black-hole its connections, for fault tests.

TLS passes through untouched, so clients verify the API server's own certificate (it is valid
for 127.0.0.1). `blackhole()` plays a NAT or a firewall that drops a flow without a word: every
connection open at that moment stops forwarding in both directions but stays open, while new
connections are forwarded as usual. `heal()` lets those connections flow again; what was sent
meanwhile then arrives late, as TCP would retransmit it.

    with BlackholeProxy() as proxy:
        config = write_proxied_kubeconfig(KUBECONFIG, proxy.port, tmp_path / "kubeconfig")
        ...  # a client on `config` watches
        proxy.blackhole()  # its watch goes silent; a fresh request still gets through

Only the standard library: the event loop runs in a background thread of the test process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.e2e.cluster import kubectl_binary, testbed

T = TypeVar("T")

_CHUNK = 64 * 1024


class _Flow:
    """One client connection and its connection to the server; `flowing` is cleared while the
    flow is black-holed."""

    def __init__(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()


class BlackholeProxy:
    """A TCP proxy on 127.0.0.1 (a free port) to `upstream`, by default the local API server."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream or (testbed.HOST, testbed.PORT_APISERVER)
        #: Connections accepted since start().
        self.accepted = 0
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flows: set[_Flow] = set()
        self._held: set[_Flow] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ the test's side

    def start(self) -> BlackholeProxy:
        """Listen and forward, from a background thread; returns self."""
        if self._loop is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="blackhole-proxy", daemon=True
        )
        self._thread.start()
        self._port = self._call(self._listen())
        return self

    @property
    def port(self) -> int:
        """The port the proxy listens on (127.0.0.1)."""
        if not self._port:
            raise RuntimeError("proxy not started")
        return self._port

    @property
    def address(self) -> str:
        """`https://127.0.0.1:<port>`: the server to give clients."""
        return f"https://127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        """From now on, every connection open so far forwards nothing, either way, and stays
        open; connections made later are forwarded normally."""
        self._call(self._blackhole())

    def heal(self) -> None:
        """Let the black-holed connections flow again."""
        self._call(self._heal())

    def stop(self) -> None:
        """Close the listener and every connection; stop the thread. Idempotent."""
        if self._loop is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> BlackholeProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the proxy's loop and wait for it, so its effect holds on return."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # ------------------------------------------------------------ the loop's side

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _blackhole(self) -> None:
        for flow in self._flows:
            flow.flowing.clear()
        self._held |= self._flows

    async def _heal(self) -> None:
        for flow in self._held:
            flow.flowing.set()
        self._held.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        flow = _Flow()
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            self._flows.add(flow)
            pumps = [
                asyncio.create_task(self._pump(flow, reader, upstream_writer)),
                asyncio.create_task(self._pump(flow, upstream_reader, writer)),
            ]
            try:
                # Each direction ends on its own EOF (half-close); an error ends both.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            # Cancelled by stop(): end quietly, since Python 3.11's start_server callback
            # reports a handler task that ends cancelled as an error.
            pass
        finally:
            self._flows.discard(flow)
            self._held.discard(flow)
            self._handlers.discard(task)
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pump(flow: _Flow, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy src to dst while the flow is not black-holed. A chunk read just before the flow
        was black-holed waits for heal() too, so nothing slips through."""
        while True:
            await flow.flowing.wait()
            data = await src.read(_CHUNK)
            await flow.flowing.wait()
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()


def write_proxied_kubeconfig(kubeconfig: Path | str, port: int, dest: Path) -> Path:
    """Write at `dest` the current context of `kubeconfig`, credentials included, with its
    server replaced by the proxy's `https://127.0.0.1:<port>`; returns `dest`."""
    out = subprocess.run(
        [
            kubectl_binary(),
            "config",
            "view",
            "--kubeconfig",
            str(kubeconfig),
            "--raw",
            "--flatten",
            "--minify",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    config = json.loads(out)
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dest.write_text(json.dumps(config, indent=2))
    dest.chmod(0o600)
    return dest
