"""The spec operations of SPEC §2 and §6 on a task or a batch: kill, hold, release, retry."""

from __future__ import annotations

from typing import Any

from simtask.sdk.client import Client, ConflictError, Kind

#: How many times a retry re-reads the object after a conflicting write before giving up.
RETRY_CONFLICTS = 20


def set_spec(client: Client, kind: Kind, namespace: str, name: str, **fields: Any) -> None:
    """Set spec fields (`kill=True`, `hold=False`, ...) with a merge patch."""
    client.patch(kind, namespace, name, {"spec": fields})


def retry_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that raises `obj`'s `spec.retry` by one, guarded by its
    resourceVersion. A killed object also gets `kill: false`: only the update that raises
    the counter may take a kill back, and the new attempt must not be killed at once."""
    spec = obj.get("spec") or {}
    wanted: dict[str, Any] = {"retry": int(spec.get("retry") or 0) + 1}
    if spec.get("kill"):
        wanted["kill"] = False
    return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": wanted}


def raise_retry(client: Client, kind: Kind, namespace: str, name: str) -> int:
    """Raise `spec.retry` by one without losing a concurrent raise; return the new value.

    The write carries the resourceVersion it was computed from, so two users raising the
    counter at once cannot both write the same value: the later write gets 409 Conflict,
    reads the object again and raises the counter from there.
    """
    for _ in range(RETRY_CONFLICTS):
        patch = retry_patch(client.get(kind, namespace, name))
        try:
            client.patch(kind, namespace, name, patch)
        except ConflictError:
            continue
        return int(patch["spec"]["retry"])
    raise ConflictError(
        f"{kind.ref(name)} in namespace {namespace} kept changing: "
        f"spec.retry not raised after {RETRY_CONFLICTS} tries"
    )
