"""The chart's alerts, checked and unit-tested by promtool on what the chart renders."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.tools import Chart, one, promtool

ALERTS_TEST = Path(__file__).with_name("alerts_test.yaml")


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the rendered rules (simtask-rules.yaml) and a copy of alerts_test.yaml."""
    chart = Chart(tmp_path_factory.mktemp("helm-home"))
    rule = one(chart.render("prometheusRule.enabled=true"), "PrometheusRule")
    directory = tmp_path_factory.mktemp("rules")
    (directory / "simtask-rules.yaml").write_text(
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False)
    )
    shutil.copy(ALERTS_TEST, directory / ALERTS_TEST.name)
    return directory


def _promtool(directory: Path, *args: str) -> str:
    proc = subprocess.run(
        [promtool(), *args], cwd=directory, capture_output=True, text=True, timeout=120
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_check_rules(rules_dir: Path) -> None:
    out = _promtool(rules_dir, "check", "rules", "simtask-rules.yaml")
    assert "SUCCESS: 4 rules found" in out


def test_promtool_test_rules(rules_dir: Path) -> None:
    out = _promtool(rules_dir, "test", "rules", ALERTS_TEST.name)
    assert "SUCCESS" in out


def test_every_alert_has_firing_and_quiet_cases(rules_dir: Path) -> None:
    rules = yaml.safe_load((rules_dir / "simtask-rules.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    spec = yaml.safe_load(ALERTS_TEST.read_text())
    cases = [case for test in spec["tests"] for case in test.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fires == alerts
    assert quiet == alerts
