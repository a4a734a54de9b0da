"""Researchers on a shared cluster, as real users through the API server's RBAC authorizer.

Each request is made with impersonation (`kubectl --as=alice --as-group=system:authenticated`),
so the API server authorizes it exactly as it would alice's own credentials. Users hold only
the standard roles (`edit`, `view`) in their namespace; the chart's roles reach them through
the aggregation controller of kube-controller-manager. No operator is needed for any of this.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.cluster import eventually, kubectl, kubectl_json
from tests.e2e.conftest import RELEASE
from tests.e2e.tasks import task_manifest

GROUP = "simtask.dev"
TASKS = f"simulationtasks.{GROUP}"
GROUPS = f"machinegroups.{GROUP}"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)


# ---------------------------------------------------------------- helpers


def as_user(
    user: str, *args: str, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl ARGS as `user`, an authenticated user with no group of their own."""
    return kubectl(
        f"--as={user}",
        "--as-group=system:authenticated",
        *args,
        input_text=input_text,
        check=False,
    )


def assert_allowed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Forbidden" not in proc.stderr, proc.stderr


def assert_forbidden(
    proc: subprocess.CompletedProcess[str],
    user: str,
    verb: str,
    resource: str,
    namespace: str | None = None,
) -> None:
    """kubectl failed, and because the authorizer refused `user` exactly this request."""
    assert proc.returncode == 1, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = f'User "{user}" cannot {verb} resource "{resource}" in API group "{GROUP}" {where}'
    assert "Error from server (Forbidden)" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


def can_i(user: str, verb: str, resource: str, *args: str) -> bool:
    proc = as_user(user, "auth", "can-i", verb, resource, *args)
    return proc.stdout.strip() == "yes"


def bind(namespace: str, user: str, cluster_role: str) -> None:
    """A RoleBinding of `user` to a standard ClusterRole in `namespace`, as an admin writes it;
    returns once the authorizer's cache has it."""
    kubectl(
        "create",
        "rolebinding",
        f"{user}-{cluster_role}",
        f"--clusterrole={cluster_role}",
        f"--user={user}",
        "-n",
        namespace,
    )
    eventually(
        lambda: can_i(user, "get", TASKS, "-n", namespace),
        timeout=30,
        what=f"{user} bound to {cluster_role} in {namespace}",
    )


def create_task(user: str, namespace: str, name: str) -> subprocess.CompletedProcess[str]:
    manifest = json.dumps(task_manifest(name))
    return as_user(user, "create", "-n", namespace, "-f", "-", input_text=manifest)


def write_status(
    user: str, kind: str, name: str, status: dict[str, Any], namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A PATCH of the status subresource as `user` (server-side apply: `kubectl patch` would
    GET the subresource first, and be refused that instead)."""
    body = {"apiVersion": f"{GROUP}/v1alpha1", "kind": kind, "metadata": {"name": name}}
    where = ("-n", namespace) if namespace else ()
    return as_user(
        user,
        *("apply", "--server-side", "--subresource=status", *where, "-f", "-"),
        input_text=json.dumps({**body, "status": status}),
    )


def exists(*args: str) -> bool:
    """Whether the admin sees the object."""
    return kubectl("get", *args, check=False).returncode == 0


def machine_group_manifest(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "MachineGroup",
            "metadata": {"name": name},
            "spec": {"nodeSelector": {"e2e.simtask.dev/pool": name}},
        }
    )


def expand(role: dict[str, Any]) -> set[Rule]:
    return {
        (g, r, v)
        for rule in role.get("rules") or []
        for g in rule.get("apiGroups") or []
        for r in rule.get("resources") or []
        for v in rule.get("verbs") or []
    }


def rules(resources: tuple[str, ...], verbs: tuple[str, ...]) -> set[Rule]:
    return {(GROUP, r, v) for r in resources for v in verbs}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def standard_roles(chart: str) -> dict[str, set[Rule]]:
    """The standard view, edit and admin ClusterRoles once aggregation has filled in the chart's
    rules (the chart is installed by the `chart` fixture); their rules, expanded."""
    want = {
        "view": rules(("simulationtasks", "simulationbatches"), READ),
        "edit": rules(("simulationtasks", "simulationbatches"), READ + WRITE),
        "admin": rules(("simulationtasks", "simulationbatches"), READ + WRITE),
    }

    def probe() -> dict[str, set[Rule]] | None:
        got = {name: expand(kubectl_json("get", "clusterrole", name)) for name in want}
        return got if all(want[name] <= got[name] for name in want) else None

    return eventually(probe, timeout=60, what="the chart's rules aggregated into view/edit/admin")


@pytest.fixture
def other_namespace(namespace: str, core: client.CoreV1Api) -> Iterator[str]:
    """A second namespace, next to the test's own, where its users hold no role."""
    name = f"{namespace}-b"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def machine_group() -> Iterator[str]:
    """A MachineGroup an admin made for the test."""
    name = f"e2e-roles-{uuid.uuid4().hex[:8]}"
    kubectl("create", "-f", "-", input_text=machine_group_manifest(name))
    yield name
    kubectl("delete", "machinegroup", name, "--ignore-not-found", "--wait=false", check=False)


# ---------------------------------------------------------------- stories


def test_standard_roles_carry_the_chart_rules(standard_roles: dict[str, set[Rule]]) -> None:
    for name, found in standard_roles.items():
        ours = {rule for rule in found if rule[0] == GROUP}
        # Never a status subresource, never a MachineGroup (cluster-scoped: an admin's object).
        assert not [r for r in ours if "/" in r[1] or r[1] == "machinegroups"], (name, ours)
    assert not [r for r in standard_roles["view"] if r[0] == GROUP and r[2] not in READ]


def test_edit_user_runs_tasks_in_their_namespace_only(
    standard_roles: dict[str, set[Rule]], namespace: str, other_namespace: str
) -> None:
    alice = "alice"
    bind(namespace, alice, "edit")

    # Alice submits a task in her namespace: the API server stores it.
    proc = create_task(alice, namespace, "cavity")
    assert_allowed(proc)
    assert f"simulationtask.{GROUP}/cavity created" in proc.stdout
    task = kubectl_json("get", "simulationtask", "cavity", "-n", namespace)
    assert task["spec"]["image"] == task_manifest("cavity")["spec"]["image"]

    # She lists and holds it (a spec patch), as the tools of the project do for her.
    proc = as_user(alice, "get", "simtasks", "-n", namespace, "-o", "name")
    assert_allowed(proc)
    assert proc.stdout.split() == [f"simulationtask.{GROUP}/cavity"]
    hold = json.dumps({"spec": {"hold": True}})
    assert_allowed(
        as_user(alice, "patch", "simtask", "cavity", "-n", namespace, "--type=merge", "-p", hold)
    )

    # The status is the operator's: she cannot write it.
    proc = write_status(alice, "SimulationTask", "cavity", {"phase": "Success"}, namespace)
    assert_forbidden(proc, alice, "patch", "simulationtasks/status", namespace)
    task = kubectl_json("get", "simulationtask", "cavity", "-n", namespace)
    assert (task.get("status") or {}).get("phase") != "Success"

    # The next namespace is not hers.
    proc = create_task(alice, other_namespace, "cavity")
    assert_forbidden(proc, alice, "create", "simulationtasks", other_namespace)
    assert not exists("simulationtask", "cavity", "-n", other_namespace)
    proc = as_user(alice, "get", "simtasks", "-n", other_namespace)
    assert_forbidden(proc, alice, "list", "simulationtasks", other_namespace)

    # And she deletes her own task.
    assert_allowed(as_user(alice, "delete", "simtask", "cavity", "-n", namespace))
    assert not exists("simulationtask", "cavity", "-n", namespace)


def test_edit_user_reads_machine_groups_but_cannot_manage_them(
    standard_roles: dict[str, set[Rule]], namespace: str, machine_group: str
) -> None:
    alice = "alice"
    bind(namespace, alice, "edit")

    # Every user sees the pools they may submit to (the chart's machinegroup-viewer binding).
    proc = as_user(alice, "get", "machinegroups", "-o", "name")
    assert_allowed(proc)
    assert f"machinegroup.{GROUP}/{machine_group}" in proc.stdout.split()
    assert_allowed(as_user(alice, "get", "machinegroup", machine_group))

    # Making, changing, terminating or deleting one is an admin's job.
    mine = f"e2e-roles-alice-{uuid.uuid4().hex[:8]}"
    try:
        proc = as_user(alice, "create", "-f", "-", input_text=machine_group_manifest(mine))
        assert_forbidden(proc, alice, "create", "machinegroups")
        assert not exists("machinegroup", mine)
    finally:  # had she made it after all, it does not outlive the test
        kubectl("delete", "machinegroup", mine, "--ignore-not-found", "--wait=false", check=False)
    terminate = json.dumps({"spec": {"terminate": True}})
    proc = as_user(alice, "patch", "machinegroup", machine_group, "--type=merge", "-p", terminate)
    assert_forbidden(proc, alice, "patch", "machinegroups")
    proc = as_user(alice, "delete", "machinegroup", machine_group)
    assert_forbidden(proc, alice, "delete", "machinegroups")
    group = kubectl_json("get", "machinegroup", machine_group)
    assert group["metadata"].get("deletionTimestamp") is None
    assert not group["spec"].get("terminate")


def test_view_user_reads_tasks_but_cannot_create(
    standard_roles: dict[str, set[Rule]], namespace: str
) -> None:
    bob = "bob"
    kubectl("create", "-n", namespace, "-f", "-", input_text=json.dumps(task_manifest("wing")))
    bind(namespace, bob, "view")

    proc = as_user(bob, "get", "simtasks", "-n", namespace, "-o", "name")
    assert_allowed(proc)
    assert proc.stdout.split() == [f"simulationtask.{GROUP}/wing"]
    proc = as_user(bob, "get", "simtask", "wing", "-n", namespace, "-o", "json")
    assert_allowed(proc)
    assert json.loads(proc.stdout)["metadata"]["name"] == "wing"

    proc = create_task(bob, namespace, "bob-wing")
    assert_forbidden(proc, bob, "create", "simulationtasks", namespace)
    assert not exists("simulationtask", "bob-wing", "-n", namespace)
    proc = as_user(bob, "delete", "simtask", "wing", "-n", namespace)
    assert_forbidden(proc, bob, "delete", "simulationtasks", namespace)
    assert exists("simulationtask", "wing", "-n", namespace)


def test_machine_group_admin_role(standard_roles: dict[str, set[Rule]]) -> None:
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    binding = f"e2e-{carol}-machinegroup-admin"
    group = f"e2e-roles-carol-{uuid.uuid4().hex[:8]}"
    kubectl(
        "create",
        "clusterrolebinding",
        binding,
        f"--clusterrole={RELEASE}-machinegroup-admin",
        f"--user={carol}",
    )
    try:
        eventually(lambda: can_i(carol, "create", GROUPS), timeout=30, what=f"{carol} bound")
        proc = as_user(carol, "create", "-f", "-", input_text=machine_group_manifest(group))
        assert_allowed(proc)
        assert exists("machinegroup", group)
        quota = json.dumps({"spec": {"maxConcurrentTasks": 4}})
        assert_allowed(as_user(carol, "patch", "machinegroup", group, "--type=merge", "-p", quota))
        assert kubectl_json("get", "machinegroup", group)["spec"]["maxConcurrentTasks"] == 4

        # Its status is still the operator's.
        proc = write_status(carol, "MachineGroup", group, {"phase": "Terminated"})
        assert_forbidden(proc, carol, "patch", "machinegroups/status")
        status = kubectl_json("get", "machinegroup", group).get("status") or {}
        assert status.get("phase") != "Terminated"

        assert_allowed(as_user(carol, "delete", "machinegroup", group, "--wait=false"))
        eventually(lambda: not exists("machinegroup", group), timeout=30, what=f"{group} gone")
    finally:
        kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)
        kubectl("delete", "machinegroup", group, "--ignore-not-found", "--wait=false", check=False)
