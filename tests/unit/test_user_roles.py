"""The chart's roles for users: aggregated to view, edit and admin, never status, no wildcards."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.unit.test_helm_chart import Rule, _expand
from tests.unit.tools import CHART, Chart, objects

GROUP = "simtask.dev"
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")
#: The namespaced kinds users work with (simulationbatches before its CRD exists is harmless).
NAMESPACED = ("simulationtasks", "simulationbatches")
FULLNAME = f"{Chart.RELEASE}-simtask-operator"


def rules(resources: tuple[str, ...], verbs: tuple[str, ...]) -> set[Rule]:
    return {(GROUP, r, v) for r in resources for v in verbs}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Chart:
    return Chart(tmp_path_factory.mktemp("helm-home"))


def user_roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ClusterRoles of templates/user-roles.yaml, by name (the operator's own is not one)."""
    return {
        d["metadata"]["name"]: d
        for d in objects(docs, "ClusterRole")
        if d["metadata"]["name"] != FULLNAME
    }


def aggregated_to(docs: list[dict[str, Any]], standard: str) -> set[Rule]:
    """What the chart adds to the standard ClusterRole `standard` through aggregation."""
    found: set[Rule] = set()
    for role in objects(docs, "ClusterRole"):
        if (role["metadata"].get("labels") or {}).get(AGGREGATE + standard) == "true":
            found |= _expand(role["rules"])
    return found


def test_user_roles_by_default(chart: Chart) -> None:
    roles = user_roles(chart.render())
    assert {name: _expand(role["rules"]) for name, role in roles.items()} == {
        f"{FULLNAME}-view": rules(NAMESPACED, READ),
        f"{FULLNAME}-edit": rules(NAMESPACED, READ + WRITE),
        f"{FULLNAME}-machinegroup-viewer": rules(("machinegroups",), READ),
        f"{FULLNAME}-machinegroup-admin": rules(("machinegroups",), READ + WRITE),
    }


def test_aggregated_to_the_standard_roles(chart: Chart) -> None:
    docs = chart.render()
    assert aggregated_to(docs, "view") == rules(NAMESPACED, READ)
    assert aggregated_to(docs, "edit") == rules(NAMESPACED, READ + WRITE)
    assert aggregated_to(docs, "admin") == rules(NAMESPACED, READ + WRITE)
    # MachineGroups are cluster-scoped: they never ride along with a namespace's roles.
    for name in ("machinegroup-viewer", "machinegroup-admin"):
        labels = user_roles(docs)[f"{FULLNAME}-{name}"]["metadata"]["labels"]
        assert not [k for k in labels if k.startswith(AGGREGATE)], labels


@pytest.mark.parametrize("values", [(), ("userRoles.machineGroupsReadableByAllUsers=false",)])
def test_no_status_and_no_wildcards(chart: Chart, values: tuple[str, ...]) -> None:
    roles = user_roles(chart.render(*values))
    assert len(roles) == 4
    for role in roles.values():
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
            assert rule["apiGroups"] == [GROUP], rule
            for key in ("apiGroups", "resources", "verbs"):
                assert rule[key] and not any("*" in item for item in rule[key]), rule
            assert not [r for r in rule["resources"] if "/" in r], rule  # no subresource


def test_every_user_may_read_machine_groups(chart: Chart) -> None:
    docs = chart.render()
    (binding,) = [
        b
        for b in objects(docs, "ClusterRoleBinding")
        if b["roleRef"]["name"] == f"{FULLNAME}-machinegroup-viewer"
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"{FULLNAME}-machinegroup-viewer",
    }
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}
    ]


def test_machine_groups_readable_by_all_users_off(chart: Chart) -> None:
    docs = chart.render("userRoles.machineGroupsReadableByAllUsers=false")
    assert [b["metadata"]["name"] for b in objects(docs, "ClusterRoleBinding")] == [FULLNAME]
    assert len(user_roles(docs)) == 4  # the roles stay, for the admin to bind


@pytest.mark.parametrize(
    "values",
    [
        ("userRoles.enabled=false",),
        # No RBAC from the chart at all: the admin writes it.
        ("rbac.create=false",),
    ],
)
def test_user_roles_off(chart: Chart, values: tuple[str, ...]) -> None:
    docs = chart.render(*values)
    assert not user_roles(docs)
    assert not [b for b in objects(docs, "ClusterRoleBinding") if b["metadata"]["name"] != FULLNAME]
    if values == ("userRoles.enabled=false",):  # the operator's own RBAC is untouched
        assert [r["metadata"]["name"] for r in objects(docs, "ClusterRole")] == [FULLNAME]


def test_names_follow_the_release(chart: Chart) -> None:
    names = set(user_roles(chart.render("fullnameOverride=hpc-sim")))
    names.discard("hpc-sim")
    assert names == {
        "hpc-sim-view",
        "hpc-sim-edit",
        "hpc-sim-machinegroup-viewer",
        "hpc-sim-machinegroup-admin",
    }


def test_defaults_in_values_yaml() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["userRoles"] == {"enabled": True, "machineGroupsReadableByAllUsers": True}


@pytest.mark.parametrize(
    "bad",
    [
        "userRoles.enabled=maybe",
        "userRoles.machineGroupsReadableByAllUsers=everyone",
        "userRoles.machineGroupsReadableByAllUser=true",
        "userRoles.aggregate=false",
        "userRoles=on",
    ],
)
def test_schema_rejects_bad_values(chart: Chart, bad: str) -> None:
    proc = chart.template(bad, check=False)
    assert proc.returncode != 0, f"--set {bad} was accepted"
    assert "schema" in proc.stderr, proc.stderr
