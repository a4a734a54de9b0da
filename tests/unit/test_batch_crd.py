"""The SimulationBatch CRD: generated from the task's, names and columns as SPEC §6 says, and
the same words as the operator's code (phases, counts, range pattern)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import yaml

from simtask import ranges
from simtask.batchdecide import BATCH_OWNED, BATCH_PHASES
from simtask.lifecycle import Phase

ROOT = Path(__file__).resolve().parents[2]
GEN = runpy.run_path(str(ROOT / "hack" / "gen-batch-crd"))
CRD: dict[str, Any] = yaml.safe_load((ROOT / "crds" / "simulationbatch.yaml").read_text())
TASK_CRD: dict[str, Any] = yaml.safe_load((ROOT / "crds" / "simulationtask.yaml").read_text())


def _root(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_files_are_what_the_generator_writes() -> None:
    """After a change of the task CRD: run hack/gen-batch-crd."""
    assert GEN["main"](["--check"]) == 0


def test_the_template_is_a_task_spec_without_what_the_batch_owns() -> None:
    template = _root(CRD)["properties"]["spec"]["properties"]["template"]
    task_spec = _root(TASK_CRD)["properties"]["spec"]
    assert set(template["properties"]) == set(task_spec["properties"]) - set(BATCH_OWNED)
    for name, prop in template["properties"].items():
        assert prop == task_spec["properties"][name], name
    assert template["required"] == task_spec["required"]
    assert not any("oldSelf" in r["rule"] for r in template["x-kubernetes-validations"])
    assert GEN["BATCH_OWNED"] == BATCH_OWNED


def test_names() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "simulationbatches.simtask.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "SimulationBatch"
    assert spec["names"]["plural"] == "simulationbatches"
    assert spec["names"]["shortNames"] == ["simbatch", "sb"]
    assert spec["names"]["categories"] == ["simulation"]
    assert spec["versions"][0]["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {
        c["name"]: c["jsonPath"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "Phase": ".status.phase",
        "Succeeded": ".status.succeeded",
        "Total": ".status.instances.total",
        "Running": ".status.running",
        "Failed": ".status.failed",
        "Reason": ".status.reason",
        "Age": ".metadata.creationTimestamp",
    }
    status = _root(CRD)["properties"]["status"]
    for path in columns.values():
        parts = path.split(".")[1:]
        if parts[0] == "metadata":
            continue
        node = _root(CRD)
        for part in parts:
            node = node["properties"][part]
    assert status["properties"]["phase"]["enum"] == list(BATCH_PHASES)


def test_status_counts_every_task_phase() -> None:
    counts = _root(CRD)["properties"]["status"]["properties"]["instances"]["properties"]
    assert set(counts) == {"total", "pending"} | {str(p) for p in Phase}


def test_indexes_pattern_is_the_range_modules() -> None:
    indexes = _root(CRD)["properties"]["spec"]["properties"]["indexes"]
    assert indexes["pattern"] == ranges.PATTERN
    assert indexes["maxLength"] <= 4096
    assert _root(CRD)["properties"]["spec"]["properties"]["count"]["maximum"] == 100_000
