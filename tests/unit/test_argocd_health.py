"""The Argo CD health checks in docs/health/, run by a real Lua interpreter (lupa).

The layout is Argo CD's own (resource_customizations/<group>/<kind>/): health.lua, and
health_test.yaml listing testdata/ objects with the health status expected of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51
import lupa.lua54
import pytest
import yaml

from simtask.lifecycle import Phase
from tests.unit.tools import REPO

HEALTH = REPO / "docs" / "health" / "simtask.dev"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


#: Argo CD runs health checks with gopher-lua, a Lua 5.1; Lua 5.4 tells integers from
#: floats, which catches numbers printed as "3.0".
RUNTIMES: dict[str, Any] = {"lua51": lupa.lua51, "lua54": lupa.lua54}


def run_health(script: str, obj: dict[str, Any], runtime: str = "lua51") -> dict[str, Any]:
    """Run a health.lua on `obj` as Argo CD does: `obj` is a global, the script returns a table.

    The libraries Argo CD does not open (io, os, require, ...) are removed, so a script
    that leans on them fails here as it would there.
    """
    lupa_module = RUNTIMES[runtime]
    lua = lupa_module.LuaRuntime(register_eval=False, register_builtins=False)
    g = lua.globals()
    for name in ("io", "os", "require", "package", "debug", "dofile", "loadfile", "load"):
        g[name] = None
    g.obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    assert lupa_module.lua_type(result) == "table", "the script must return a table"
    return {k: result[k] for k in ("status", "message")}


def cases(kind: str) -> list[Any]:
    spec = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())
    return [
        pytest.param(kind, case, id=f"{kind}-{Path(case['inputPath']).stem}")
        for case in spec["tests"]
    ]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize(
    ("kind", "case"), cases("SimulationTask") + cases("MachineGroup") + cases("SimulationBatch")
)
def test_health_check(kind: str, case: dict[str, Any], runtime: str) -> None:
    script = (HEALTH / kind / "health.lua").read_text()
    obj = yaml.safe_load((HEALTH / kind / case["inputPath"]).read_text())
    assert obj["kind"] == kind and obj["apiVersion"].startswith("simtask.dev/")
    expected = case["healthStatus"]
    assert expected["status"] in ARGO_STATUSES
    got = run_health(script, obj, runtime)
    assert got == {"status": expected["status"], "message": expected["message"]}


def _covered_phases(kind: str) -> dict[str | None, set[str]]:
    spec = yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())
    covered: dict[str | None, set[str]] = {}
    for case in spec["tests"]:
        obj = yaml.safe_load((HEALTH / kind / case["inputPath"]).read_text())
        phase = (obj.get("status") or {}).get("phase")
        covered.setdefault(phase, set()).add(case["healthStatus"]["status"])
    return covered


def test_every_task_phase_has_a_case() -> None:
    covered = _covered_phases("SimulationTask")
    assert {str(p) for p in Phase} <= set(covered)
    assert None in covered  # a task the operator has not seen yet
    # A preemption is Degraded only when no resubmission follows.
    assert covered["SpotPreempted"] == {"Progressing", "Degraded"}
    assert covered["ExecutorTerminated"] == {"Progressing", "Degraded"}


def test_every_machine_group_phase_has_a_case() -> None:
    crd = yaml.safe_load((REPO / "crds" / "machinegroup.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    phases = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]
    assert set(phases["enum"]) <= set(_covered_phases("MachineGroup"))


def test_every_batch_phase_has_a_case() -> None:
    crd = yaml.safe_load((REPO / "crds" / "simulationbatch.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    phases = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]
    covered = _covered_phases("SimulationBatch")
    assert set(phases["enum"]) <= set(covered)
    assert None in covered


NUMBERS = ("nodes", "readyNodes", "gpus", "runningTasks", "queuedTasks")


def _as_floats(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with its numbers as floats, the way Argo CD decodes JSON for Lua."""
    obj["metadata"]["generation"] = float(obj["metadata"]["generation"])
    for key in NUMBERS:
        if key in obj.get("status", {}):
            obj["status"][key] = float(obj["status"][key])
    return obj


@pytest.mark.parametrize(
    ("kind", "testdata", "message"),
    [
        (
            "SimulationTask",
            "generation-not-observed",
            "Waiting for the operator to observe generation 3",
        ),
        (
            "MachineGroup",
            "generation-not-observed",
            "Waiting for the operator to observe generation 2",
        ),
        (
            "SimulationBatch",
            "generation-not-observed",
            "Waiting for the operator to observe generation 3",
        ),
        ("MachineGroup", "active-gpu", "Active: 2 nodes (2 ready), 8 GPUs, 8 running, 4 queued"),
    ],
)
def test_numbers_decoded_as_floats(kind: str, testdata: str, message: str) -> None:
    obj = yaml.safe_load((HEALTH / kind / "testdata" / f"{testdata}.yaml").read_text())
    script = (HEALTH / kind / "health.lua").read_text()
    assert run_health(script, _as_floats(obj), "lua54")["message"] == message
