"""The Helm chart: lint, clean rendering, CRDs, least-privilege RBAC, restricted pod, options."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.tools import CHART, REPO, Chart, load_yaml_stream, objects, one

DESIGN = REPO / "docs" / "design.md"
ALL_OPTIONS = (
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
)
#: The two install modes: namespace-scoped (with every option on) and cluster-wide with the
#: Secret opt-in.
SCOPED = (*ALL_OPTIONS, "watchNamespaces={team-a,team-b}")
SECRETS_OPT_IN = ("rbac.readSecretsClusterWide=true",)
MODES = [(), ALL_OPTIONS, SCOPED, SECRETS_OPT_IN]
MODE_IDS = ["defaults", "all", "namespace-scoped", "secrets-opt-in"]
KEEP = "helm.sh/resource-policy"
CHART_LABELS = ("app.kubernetes.io/", "helm.sh/")

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Chart:
    return Chart(tmp_path_factory.mktemp("helm-home"))


# ------------------------------------------------------------------ lint and rendering


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("values", MODES, ids=MODE_IDS)
def test_helm_lint(chart: Chart, strict: bool, values: tuple[str, ...]) -> None:
    args = ["lint", str(CHART)] + (["--strict"] if strict else [])
    for value in values:
        args += ["--set", value]
    out = chart.run(*args).stdout
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("values", MODES, ids=MODE_IDS)
def test_renders_clean_yaml(chart: Chart, values: tuple[str, ...]) -> None:
    text = chart.template(*values).stdout
    docs = load_yaml_stream(text)  # refuses duplicate keys
    assert docs
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), doc
        metadata = doc["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", metadata["name"]), metadata
        labels = metadata.get("labels") or {}
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", metadata["name"]
        assert all(isinstance(v, str) for v in labels.values()), labels
    for line in text.splitlines():
        assert line == line.rstrip(), f"trailing whitespace: {line!r}"
    # Namespaced objects land in the release namespace; only the operator's Roles of a
    # namespace-scoped install land in the namespaces it serves.
    served = {"team-a", "team-b"} if "watchNamespaces={team-a,team-b}" in values else set()
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert "namespace" not in doc["metadata"]
        elif doc["metadata"]["namespace"] in served:
            assert doc["kind"] in ("Role", "RoleBinding"), doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == Chart.NAMESPACE, doc["metadata"]


def test_default_objects(chart: Chart) -> None:
    kinds = sorted(d["kind"] for d in chart.render("userRoles.enabled=false"))
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )


def test_notes(chart: Chart, tmp_path: Path) -> None:
    # `helm template` skips NOTES.txt: render it through tpl in a copy of the chart.
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    shutil.copy(CHART / "templates" / "NOTES.txt", copy / "files" / "NOTES.txt")
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}\n'
    )
    for values, expected in [
        ((), "kubectl -n simtask-system rollout status deployment/simtask-simtask-operator"),
        (("replicaCount=0",), "The operator is paused"),
        (("crds.install=false",), "crds.install=false"),
    ]:
        args = ["template", Chart.RELEASE, str(copy), "--namespace", Chart.NAMESPACE]
        for value in values:
            args += ["--set", value]
        docs = load_yaml_stream(chart.run(*args, "--show-only", "templates/zz-notes.yaml").stdout)
        notes = docs[0]["data"]["notes"]
        assert expected in notes
        assert "<no value>" not in notes and "%!" not in notes, notes


# ------------------------------------------------------------------ CRDs


def _source_crds() -> dict[str, Path]:
    return {p.name: p for p in sorted((REPO / "crds").glob("*.yaml"))}


def test_chart_crds_are_a_copy_of_crds_dir() -> None:
    source = _source_crds()
    copy = {p.name: p for p in sorted((CHART / "files" / "crds").glob("*.yaml"))}
    assert len(source) >= 2, "crds/ should hold the SimulationTask and MachineGroup CRDs"
    fix = "cp crds/*.yaml helm/simtask-operator/files/crds/"
    assert sorted(copy) == sorted(source), f"chart CRDs differ from crds/: {fix}"
    for name, path in source.items():
        assert copy[name].read_bytes() == path.read_bytes(), f"{name} drifted: {fix}"


def _crd_names(docs: list[dict[str, Any]]) -> set[str]:
    return {d["metadata"]["name"] for d in objects(docs, "CustomResourceDefinition")}


def test_crds_rendered_from_source_with_keep_policy(chart: Chart) -> None:
    rendered = {
        d["metadata"]["name"]: d for d in objects(chart.render(), "CustomResourceDefinition")
    }
    assert {"simulationtasks.simtask.dev", "machinegroups.simtask.dev"} <= set(rendered)
    for path in _source_crds().values():
        source = yaml.safe_load(path.read_text())
        got = rendered[source["metadata"]["name"]]
        assert got["metadata"]["annotations"][KEEP] == "keep"
        # Exactly the source, plus the chart's labels and the keep annotation.
        for field in ("labels", "annotations"):
            added = dict(got["metadata"].get(field) or {})
            for key, value in (source["metadata"].get(field) or {}).items():
                assert added.pop(key) == value, f"{field} {key} changed"
            assert all(k == KEEP or k.startswith(CHART_LABELS) for k in added), added
        strip = ("labels", "annotations")
        assert {k: v for k, v in got.items() if k != "metadata"} == {
            k: v for k, v in source.items() if k != "metadata"
        }
        assert {k: v for k, v in got["metadata"].items() if k not in strip} == {
            k: v for k, v in source["metadata"].items() if k not in strip
        }


def test_crds_are_templates_not_in_crds_dir() -> None:
    # Helm installs crds/ once and never upgrades it; templates are upgraded.
    assert not (CHART / "crds").exists()


def test_crds_optional(chart: Chart) -> None:
    assert not _crd_names(chart.render("crds.install=false"))
    unkept = objects(chart.render("crds.keep=false"), "CustomResourceDefinition")
    assert unkept and all(KEEP not in (d["metadata"].get("annotations") or {}) for d in unkept)


# ------------------------------------------------------------------ RBAC


def design_rbac(table: str) -> set[Rule]:
    """A table of "RBAC the operator needs" in docs/design.md, as (group, resource, verb):
    "Cluster-wide, in every install" or "In each served namespace"."""
    text = DESIGN.read_text()
    section = text.split("## RBAC the operator needs", 1)[1].split("\n## ", 1)[0]
    section = section.split(f"### {table}", 1)[1].split("\n### ", 1)[0]
    rules: set[Rule] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("API group", "") or set(cells[0]) <= {"-"}:
            continue
        groups = [g.strip().strip('"') for g in cells[0].split(" and ")]
        resources = [r.strip() for r in cells[1].split(",")]
        verbs = [v.strip() for v in cells[2].split(",")]
        rules |= {(g, r, v) for g in groups for r in resources for v in verbs}
    assert len(rules) >= 5, f"could not read the RBAC table {table!r} of docs/design.md"
    return rules


CLUSTER = "Cluster-wide, in every install"
NAMESPACED = "In each served namespace"
SECRETS = {("", "secrets", "get")}


def _expand(rules: list[dict[str, Any]]) -> set[Rule]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def _roles(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (d for d in docs if d["kind"] in ("Role", "ClusterRole"))


def test_rbac_has_no_wildcards(chart: Chart) -> None:
    roles = list(_roles(chart.render()))
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
            for key in ("apiGroups", "resources", "verbs"):
                assert rule[key], rule
                assert not any("*" in item for item in rule[key]), rule


def _operator_cluster_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's own ClusterRole, named as its ServiceAccount (the others are the users'
    roles, tested in test_user_roles.py), after checking its binding."""
    name = one(docs, "ServiceAccount")["metadata"]["name"]
    (role,) = [
        r for r in _roles(docs) if r["kind"] == "ClusterRole" and r["metadata"]["name"] == name
    ]
    (binding,) = [b for b in objects(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == name]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    _assert_subject_is_operator(docs, binding)
    return role


def _operator_args(docs: list[dict[str, Any]]) -> list[str]:
    (container,) = [c for c in _pod(docs)["containers"] if c["name"] == "operator"]
    return list(container["args"])


def test_rbac_equals_design_table(chart: Chart) -> None:
    """Serving the whole cluster: one ClusterRole, the two tables, and no Secret at all."""
    docs = chart.render()
    role = _operator_cluster_role(docs)
    assert _expand(role["rules"]) == design_rbac(CLUSTER) | design_rbac(NAMESPACED)
    assert not [r for r in _roles(docs) if r["kind"] == "Role" and "lease" not in str(r)]
    assert "--no-check-secret-inputs" in _operator_args(docs)
    assert not any(a.startswith("--namespaces") for a in _operator_args(docs))


def test_reading_every_secret_is_an_explicit_opt_in(chart: Chart) -> None:
    docs = chart.render("rbac.readSecretsClusterWide=true")
    role = _operator_cluster_role(docs)
    assert _expand(role["rules"]) == design_rbac(CLUSTER) | design_rbac(NAMESPACED) | SECRETS
    assert "--no-check-secret-inputs" not in _operator_args(docs)


def test_a_namespace_scoped_install_grants_tasks_jobs_pods_and_secrets_there_only(
    chart: Chart,
) -> None:
    docs = chart.render("watchNamespaces={team-a,team-b}", "rbac.readSecretsClusterWide=true")
    role = _operator_cluster_role(docs)
    assert _expand(role["rules"]) == design_rbac(CLUSTER)
    account = one(docs, "ServiceAccount")["metadata"]
    roles = {
        r["metadata"]["namespace"]: r
        for r in _roles(docs)
        if r["kind"] == "Role" and r["metadata"]["name"] == account["name"]
    }
    assert set(roles) == {"team-a", "team-b"}
    for namespace, ns_role in roles.items():
        assert _expand(ns_role["rules"]) == design_rbac(NAMESPACED) | SECRETS
        (binding,) = [
            b
            for b in objects(docs, "RoleBinding")
            if b["metadata"]["namespace"] == namespace
            and b["roleRef"]["kind"] == "Role"
            and b["roleRef"]["name"] == account["name"]
        ]
        _assert_subject_is_operator(docs, binding)
    args = _operator_args(docs)
    assert "--namespaces=team-a,team-b" in args and "--no-check-secret-inputs" not in args


@pytest.mark.parametrize("bad", ["watchNamespaces={Team_A}", "watchNamespaces={a,a}"])
def test_watch_namespaces_are_namespace_names(chart: Chart, bad: str) -> None:
    proc = chart.template(bad, check=False)
    assert proc.returncode != 0 and "watchNamespaces" in proc.stderr


def _assert_subject_is_operator(docs: list[dict[str, Any]], binding: dict[str, Any]) -> None:
    account = one(docs, "ServiceAccount")["metadata"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def test_rbac_can_be_left_to_the_admin(chart: Chart) -> None:
    docs = chart.render(
        "rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=op"
    )
    assert not list(_roles(docs)) and not objects(docs, "ServiceAccount")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "op"


# ------------------------------------------------------------------ Deployment


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return pod


RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def test_deployment_is_restricted_pod_security(chart: Chart) -> None:
    pod = _pod(chart.render())
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert not pod.get(host), host
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES, volume
    containers = pod["containers"] + pod.get("initContainers", [])
    for container in containers:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc.get("privileged", False) is False
        assert sc["runAsNonRoot"] is True
        assert sc.get("runAsUser", psc["runAsUser"]) != 0
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert sc.get("seccompProfile", psc["seccompProfile"]) == {"type": "RuntimeDefault"}
        assert "ports" not in container or all("hostPort" not in p for p in container["ports"])


def test_deployment_shape(chart: Chart) -> None:
    deployment = one(chart.render(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == "simtask-operator:0.1.0"
    assert container["args"][:3] == [
        "--leader-elect",
        "--leader-election-namespace=simtask-system",
        "--lease-duration=10",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_deployment_options_and_image(chart: Chart) -> None:
    # Values that differ from values.yaml, so a template that ignores them cannot pass.
    docs = chart.render(
        "image.repository=registry.example/simtask",
        "image.digest=sha256:" + "a" * 64,
        "operator.logLevel=DEBUG",
        "operator.workers=7",
        "operator.extraArgs={--bind=0.0.0.0}",
        "leaderElection.enabled=false",
        "watchNamespaces={team-a}",
    )
    (container,) = _pod(docs)["containers"]
    assert container["args"] == [
        "--log-level=DEBUG",
        "--workers=7",
        "--namespaces=team-a",
        "--bind=0.0.0.0",
    ]
    assert container["image"] == "registry.example/simtask@sha256:" + "a" * 64


#: The parser's environment fallbacks, which must not stand in for the chart's flags.
OPERATOR_ENV = (
    "SIMTASK_METRICS_PORT",
    "SIMTASK_HEALTH_PORT",
    "SIMTASK_BIND",
    "SIMTASK_WORKERS",
    "SIMTASK_LOG_LEVEL",
    "SIMTASK_NAMESPACES",
    "SIMTASK_CHECK_SECRET_INPUTS",
)


def test_operator_accepts_the_deployment_args(
    chart: Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simtask.main import parse_args

    for name in OPERATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    defaults = parse_args([])
    # Settings the operator does not default to: only the chart's flags can produce them.
    log_level, workers = "DEBUG", defaults.workers + 5
    assert defaults.log_level != log_level
    values = (f"operator.logLevel={log_level}", f"operator.workers={workers}")
    (container,) = _pod(chart.render(*values))["containers"]
    args = parse_args(container["args"])  # exits on a flag the operator does not know ...
    with pytest.raises(SystemExit):  # ... as it does for this one
        parse_args([*container["args"], "--no-such-flag"])
    assert (args.log_level, args.workers) == (log_level, workers)
    for flag in container["args"]:
        if "=" not in flag:  # a switch the chart turns on (or, for --no-X, off)
            name = flag.removeprefix("--")
            wanted = not name.startswith("no-")
            assert getattr(args, name.removeprefix("no-").replace("-", "_")) is wanted, flag
    # The ports the chart probes and scrapes are the operator's defaults.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (args.metrics_port, args.health_port) == (ports["metrics"], ports["health"])


def test_leader_election_lease_role(chart: Chart) -> None:
    docs = chart.render("leaderElection.leaseDurationSeconds=15")
    (container,) = _pod(docs)["containers"]
    assert "--lease-duration=15" in container["args"]
    (role,) = [r for r in _roles(docs) if r["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "simtask-system"
    assert _expand(role["rules"]) == {
        ("coordination.k8s.io", "leases", verb) for verb in ("create", "get", "update")
    }
    named = [r for r in role["rules"] if "get" in r["verbs"]]
    assert named and all(r.get("resourceNames") == ["simtask-operator"] for r in named)
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    _assert_subject_is_operator(docs, binding)
    off = chart.render("leaderElection.enabled=false")
    assert not [r for r in _roles(off) if r["kind"] == "Role"]
    assert "--leader-elect" not in _pod(off)["containers"][0]["args"]


def test_replicas_zero_pauses(chart: Chart) -> None:
    assert one(chart.render("replicaCount=0"), "Deployment")["spec"]["replicas"] == 0


def test_metrics_service(chart: Chart) -> None:
    docs = chart.render()
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


# ------------------------------------------------------------------ optional monitoring


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("serviceMonitor.enabled=true", "ServiceMonitor"),
        ("prometheusRule.enabled=true", "PrometheusRule"),
        ("grafanaDashboard.enabled=true", "ConfigMap"),
    ],
)
def test_monitoring_objects_only_when_enabled(chart: Chart, value: str, kind: str) -> None:
    assert not objects(chart.render(), kind)
    enabled = chart.render(value)
    assert len(objects(enabled, kind)) == 1
    others = {"ServiceMonitor", "PrometheusRule", "ConfigMap"} - {kind}
    assert not [d for d in enabled if d["kind"] in others]


def test_service_monitor_scrapes_the_metrics_service(chart: Chart) -> None:
    docs = chart.render("serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = one(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [Chart.NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"


def design_metrics() -> dict[str, str]:
    """Metric name -> type, from the metrics table of docs/design.md."""
    section = DESIGN.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    found = dict(re.findall(r"^\| `(simtask_[a-z_]+)` \| (\w+) \|", section, re.MULTILINE))
    assert len(found) >= 8, "could not read the metrics table of docs/design.md"
    return found


def test_metrics_doc_lists_every_metric() -> None:
    text = (REPO / "docs" / "metrics.md").read_text()
    documented = dict(re.findall(r"^\| `(simtask_[a-z_]+)` \| (\w+) \|", text, re.MULTILINE))
    assert documented == design_metrics()


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bsimtask_[a-z_]+", expr))


def _known(name: str, metrics: dict[str, str]) -> bool:
    if name in metrics:
        return True
    base, _, suffix = name.rpartition("_")
    return suffix in ("bucket", "sum", "count") and metrics.get(base) == "histogram"


def test_prometheus_rule_alerts(chart: Chart) -> None:
    rule = one(chart.render("prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "SimTaskStuckSubmitted",
        "SimTaskPreemptionStorm",
        "SimTaskReconcileErrors",
        "SimTaskOperatorDown",
    }
    metrics = design_metrics()
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert all(_known(m, metrics) for m in _metric_names(alert["expr"])), alert["expr"]
    stuck = alerts["SimTaskStuckSubmitted"]["expr"]
    assert 'simtask_tasks{phase="Submitted"}' in stuck
    assert 'simtask_transitions_total{to_phase="Started"}[15m]' in stuck
    assert "simtask_resubmissions_total" in alerts["SimTaskPreemptionStorm"]["expr"]
    assert "rate(simtask_reconcile_errors_total" in alerts["SimTaskReconcileErrors"]["expr"]
    assert alerts["SimTaskReconcileErrors"]["for"] == "10m"
    assert "absent(up{" in alerts["SimTaskOperatorDown"]["expr"]


def test_prometheus_rule_options(chart: Chart) -> None:
    def alert_names(*values: str) -> set[str]:
        rule = one(chart.render("prometheusRule.enabled=true", *values), "PrometheusRule")
        return {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}

    assert "SimTaskOperatorDown" not in alert_names("replicaCount=0")
    assert "SimTaskPreemptionStorm" not in alert_names(
        "prometheusRule.alerts.preemptionStorm.enabled=false"
    )
    rule = one(
        chart.render(
            "prometheusRule.enabled=true", "prometheusRule.additionalAlertLabels.team=hpc"
        ),
        "PrometheusRule",
    )
    assert all(r["labels"]["team"] == "hpc" for g in rule["spec"]["groups"] for r in g["rules"])


def test_grafana_dashboard(chart: Chart) -> None:
    config_map = one(chart.render("grafanaDashboard.enabled=true"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name,) = config_map["data"]
    dashboard = json.loads(config_map["data"][name])
    assert name.endswith(".json") and dashboard["uid"] == "simtask-operator"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    metrics = design_metrics()
    assert all(_known(m, metrics) for m in used), used
    # The panels the issue asks for.
    assert any("sum by (phase) (simtask_tasks" in e for e in exprs)
    assert any("simtask_transitions_total" in e for e in exprs)
    assert any("simtask_resubmissions_total" in e for e in exprs)
    assert any(
        "histogram_quantile" in e and "simtask_queue_wait_seconds_bucket" in e for e in exprs
    )
    assert any(
        "histogram_quantile" in e and "simtask_run_duration_seconds_bucket" in e for e in exprs
    )
    assert any("simtask_reconcile_errors_total" in e for e in exprs)
    # Every metric of the design has a panel.
    assert set(metrics) <= {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------------ values.schema.json


def test_schema_is_draft7_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        assert "type" in node, f"{path}: no type in the schema"
        if node["type"] == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: schema is not closed"
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key}: not in values.schema.json"
                walk(node["properties"][key], child, f"{path}.{key}")

    walk(schema, values, "")


@pytest.mark.parametrize(
    "bad",
    [
        "replicaCount=abc",
        "replicaCount=-1",
        "leaderElection.leaseDurationSeconds=1",
        "image.pullPolicy=Sometimes",
        "image.digest=latest",
        "crds.install=maybe",
        "noSuchValue=1",
        "serviceMonitor.interval=thirty",
        "operator.logLevel=LOUD",
        "operator.workers=0",
        "securityContext.runAsUser=-1",
        "prometheusRule.alerts.preemptionStorm.threshold=lots",
        "resources.requests.cpu=a-lot",
    ],
)
def test_schema_rejects_bad_values(chart: Chart, bad: str) -> None:
    proc = chart.template(bad, check=False)
    assert proc.returncode != 0, f"--set {bad} was accepted"
    assert "schema" in proc.stderr, proc.stderr
