"""Helpers for end-to-end tests against the local cluster: polling with deadlines, kubectl."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("TESTBED_DIR", ROOT / ".testbed"))
KUBECONFIG = STATE / "kubeconfig"

T = TypeVar("T")


class Timeout(AssertionError):
    """A condition did not hold before its deadline."""


def eventually(
    probe: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds.

    The last value seen is put in the failure message so a red test says where it stood.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise Timeout(
                f"timed out after {timeout:.0f}s waiting for {what or probe}; last: {last!r}"
            )
        time.sleep(interval)


def kubectl_binary() -> str:
    """The kubectl the testbed built (same version as the cluster)."""
    out = subprocess.run(
        [str(ROOT / "hack" / "testbed"), "env"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("export PATH="):
            return line.removeprefix("export PATH=").split(":")[0] + "/kubectl"
    raise RuntimeError("hack/testbed env printed no PATH")


_KUBECTL: str | None = None


def kubectl(
    *args: str, input_text: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the local cluster."""
    global _KUBECTL
    if _KUBECTL is None:
        _KUBECTL = kubectl_binary()
    proc = subprocess.run(
        [_KUBECTL, "--kubeconfig", str(KUBECONFIG), *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def kubectl_json(*args: str) -> Any:
    """kubectl ... -o json, parsed."""
    return json.loads(kubectl(*args, "-o", "json").stdout)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    """The condition of type `ctype` in obj.status.conditions, if any."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def _load_testbed() -> Any:
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("testbed", str(ROOT / "hack" / "testbed"))
    spec = importlib.util.spec_from_loader("testbed", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


#: hack/testbed as a module, for its node builder and pool table.
testbed = _load_testbed()
