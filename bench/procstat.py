"""The operator as a process of the benchmark's own, and what /proc says about processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """One reading of a process: CPU seconds so far, resident memory now and at its peak."""

    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int


def usage(pid: int) -> Usage | None:
    """utime+stime from /proc/<pid>/stat, VmRSS and VmHWM from /proc/<pid>/status."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)
    mem = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0]) * 1024
    return Usage(cpu, mem.get("VmRSS", 0), mem.get("VmHWM", 0))


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process (those that are gone are left out)."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        u = usage(pid)
        if u is not None:
            out[name] = u.cpu_seconds
    return out


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class OperatorProcess:
    """`simtask-operator` started by the benchmark, as users run it out of cluster."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        metrics_port: int,
        health_port: int,
        workers: int | None,
        log_path: Path,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.metrics_port = metrics_port
        self.health_port = health_port
        self.workers = workers
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.profiler: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "simtask-operator"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "simtask.main"]
        if not script.exists() and shutil.which("simtask-operator"):
            cmd = [str(shutil.which("simtask-operator"))]
        cmd += [
            "--bind",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
        ]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        return cmd

    def start(self, timeout: float = 90.0) -> None:
        """Start it and wait until /healthz says its caches are synced."""
        for port in (self.metrics_port, self.health_port):
            if not _port_free(port):
                raise RuntimeError(
                    f"port {port} is taken: pick others with --metrics-port/--health-port"
                )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
        profile = os.environ.get("SIMTASK_BENCH_PROFILE")
        if profile:
            # py-spy samples the whole run (start-up included) into collapsed stacks, for
            # bench/flame.py to fold into the heaviest frames.
            out = Path(profile) / f"{self.log_path.stem}.folded"
            out.parent.mkdir(parents=True, exist_ok=True)
            self.profiler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(self.proc.pid), "--rate", "50",
                 "--format", "raw", "--output", str(out), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                executable=shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            )  # fmt: skip
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"operator exited with {self.proc.returncode}; see {self.log_path}"
                )
            if self._healthy():
                self.started_in = time.monotonic() - t0
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"operator not healthy after {timeout:.0f}s; see {self.log_path}")

    def _healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200 and json.loads(resp.read()).get("caches") is True
        except (OSError, ValueError):
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def usage(self) -> Usage:
        """CPU and memory now; raises if the operator is gone."""
        assert self.proc is not None
        u = usage(self.proc.pid) if self.proc.poll() is None else None
        if u is None:
            raise RuntimeError(f"the operator exited ({self.proc.returncode}); see {self.log_path}")
        return u

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.profiler is not None:
            self.profiler.wait(timeout=60)  # It writes its file once the operator is gone.

    def log_problems(self, limit: int = 12) -> dict[str, object]:
        """WARNING/ERROR lines of its log: how many, and the first distinct ones."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return {"warnings": 0, "errors": 0, "samples": []}
        warnings = [ln for ln in lines if " WARNING " in ln]
        errors = [ln for ln in lines if " ERROR " in ln or " CRITICAL " in ln or "Traceback" in ln]
        samples: list[str] = []
        seen: set[str] = set()
        for ln in errors + warnings:
            # Drop the timestamp so repeats of one message count once.
            text = ln.split(" ", 2)[-1] if ln[:2].isdigit() else ln
            short = text[:300]
            if short not in seen:
                seen.add(short)
                samples.append(short)
            if len(samples) >= limit:
                break
        return {"warnings": len(warnings), "errors": len(errors), "samples": samples}
