"""Run the user's tools as users do: the `kubectl-simtask` console script, or a Python
script using simtask.sdk, as subprocesses against the local cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.e2e.cluster import KUBECONFIG

#: The console script installed with the package, next to this Python.
KUBECTL_SIMTASK = str(Path(sys.executable).parent / "kubectl-simtask")


def env(kubeconfig: str | Path = KUBECONFIG) -> dict[str, str]:
    """The environment of a user whose kubeconfig is `kubeconfig`."""
    return dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1", COLUMNS="200")


def simtask(
    *args: str, timeout: float = 120, kubeconfig: str | Path = KUBECONFIG
) -> subprocess.CompletedProcess[str]:
    """`kubectl simtask ARGS...`, to its end."""
    return subprocess.run(
        [KUBECTL_SIMTASK, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(kubeconfig),
    )


def _as_in_a_terminal() -> None:
    """Ctrl-C as a user's terminal delivers it: a suite started in the background (CI, a
    `cmd &` shell) ignores SIGINT, and children inherit that, so Python would never raise
    KeyboardInterrupt in them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, kubeconfig: str | Path = KUBECONFIG) -> subprocess.Popen[str]:
    """`kubectl simtask ARGS...` in the background."""
    return subprocess.Popen(
        [KUBECTL_SIMTASK, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(kubeconfig),
        preexec_fn=_as_in_a_terminal,
    )


def manifest_file(*docs: dict[str, Any]) -> str:
    """The documents written to a temporary YAML (JSON is YAML) file; returns its path."""
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix="simtask-e2e-")
    with os.fdopen(fd, "w") as f:
        f.write("\n---\n".join(json.dumps(d) for d in docs))
    return path


def python_script(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python script using the SDK (`args` in its sys.argv), in the background."""
    return subprocess.Popen(
        [sys.executable, "-u", "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        preexec_fn=_as_in_a_terminal,
    )
