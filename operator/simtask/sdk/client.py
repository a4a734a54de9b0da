"""The connection the user's tools use: the user's own kubeconfig (or in-cluster account),
and errors in words a user can act on instead of the client's exceptions."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from simtask import API_VERSION, GROUP, VERSION


class SimTaskError(Exception):
    """Something went wrong that the user can act on; the message says what."""


class NotFoundError(SimTaskError):
    """The object does not exist (or was deleted while we looked at it)."""


class ForbiddenError(SimTaskError):
    """The user's account may not do this."""


class ConflictError(SimTaskError):
    """The object changed under us more often than we were willing to retry."""


@dataclass(frozen=True)
class Kind:
    """A kind the tools handle: its names in the API and for people."""

    kind: str
    plural: str
    short: str

    def ref(self, name: str) -> str:
        """How the CLI names one object of this kind, kubectl style: `simtask/NAME`."""
        return f"{self.short}/{name}"


TASKS = Kind("SimulationTask", "simulationtasks", "simtask")
BATCHES = Kind("SimulationBatch", "simulationbatches", "simbatch")


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn the Kubernetes client's exceptions into SimTaskErrors that say `what` failed."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 404:
            raise NotFoundError(f"{what}: not found") from None
        if exc.status in (401, 403):
            raise ForbiddenError(f"{what}: {_message(exc)}") from None
        if exc.status == 409:
            raise ConflictError(f"{what}: {_message(exc)}") from None
        if exc.status == 0:
            raise SimTaskError(f"{what}: {exc.reason}") from None
        raise SimTaskError(f"{what}: {_message(exc)} ({exc.status})") from None
    except urllib3.exceptions.HTTPError as exc:
        raise SimTaskError(f"{what}: cannot reach the Kubernetes API server ({exc})") from None


def _in_cluster_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else "default"


@dataclass
class Client:
    """An API connection with the user's credentials and their default namespace.

    `Client.connect()` reads the kubeconfig the way kubectl does (`KUBECONFIG`, then
    `~/.kube/config`; `context` picks a context), or the pod's ServiceAccount in a cluster.
    """

    api: client.ApiClient
    namespace: str = "default"
    _custom: Any = field(default=None, repr=False)
    _core: Any = field(default=None, repr=False)

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Client:
        """A connection from a kubeconfig file and context (None: kubectl's defaults)."""
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        default_path = Path(path or "~/.kube/config").expanduser()
        if not default_path.exists() and kubeconfig is None and context is None:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                return cls(client.ApiClient(cfg), _in_cluster_namespace())
            raise SimTaskError(
                f"no kubeconfig at {default_path}: set KUBECONFIG or pass --kubeconfig"
            )
        try:
            contexts, active = config.list_kube_config_contexts(config_file=str(default_path))
            chosen = active
            if context is not None:
                chosen = next((c for c in contexts if c["name"] == context), None)
                if chosen is None:
                    raise SimTaskError(f"context {context!r} is not in {default_path}")
            api = config.new_client_from_config(config_file=str(default_path), context=context)
        except ConfigException as exc:
            raise SimTaskError(f"kubeconfig {default_path}: {exc}") from None
        namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        return cls(api, str(namespace))

    @property
    def custom(self) -> Any:
        """CustomObjectsApi on this connection."""
        if self._custom is None:
            self._custom = client.CustomObjectsApi(self.api)
        return self._custom

    @property
    def core(self) -> Any:
        """CoreV1Api on this connection."""
        if self._core is None:
            self._core = client.CoreV1Api(self.api)
        return self._core

    # --- our kinds, as plain dicts -----------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        """One object of `kind`."""
        with api_errors(f"{kind.ref(name)} in namespace {namespace}"):
            return dict(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, name
                )
            )

    def list(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        """The list of `kind` in `namespace` (None: every namespace), with its resourceVersion."""
        kwargs: dict[str, Any] = {}
        if label_selector:
            kwargs["label_selector"] = label_selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        where = f"namespace {namespace}" if namespace else "any namespace"
        with api_errors(f"listing {kind.plural} in {where}"):
            if namespace is None:
                return dict(
                    self.custom.list_cluster_custom_object(GROUP, VERSION, kind.plural, **kwargs)
                )
            return dict(
                self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, **kwargs
                )
            )

    def submit(
        self,
        kind: Kind,
        spec: dict[str, Any],
        *,
        name: str | None,
        generate_name: str,
        namespace: str | None,
        labels: dict[str, str] | None,
    ) -> dict[str, Any]:
        """Create an object of `kind` from its `spec`, named `name` or, without one, with a
        name the API server generates from `generate_name`."""
        metadata: dict[str, Any] = {"name": name} if name else {"generateName": generate_name}
        if labels:
            metadata["labels"] = dict(labels)
        body = {"apiVersion": API_VERSION, "kind": kind.kind, "metadata": metadata}
        return self.create(kind, namespace or self.namespace, {**body, "spec": spec})

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object of `kind` (a `metadata.generateName` is honoured)."""
        meta = body.get("metadata") or {}
        name = meta.get("name") or f"{meta.get('generateName', '')}*"
        with api_errors(f"creating {kind.ref(name)} in namespace {namespace}"):
            return dict(
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, body
                )
            )

    def patch(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of one object; a `metadata.resourceVersion` in it is a
        precondition (409 Conflict when the object changed since)."""
        with api_errors(f"changing {kind.ref(name)} in namespace {namespace}"):
            return dict(
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, name, patch
                )
            )


_default: Client | None = None


def default_client() -> Client:
    """The connection the SDK uses when none is given: kubectl's current context."""
    global _default
    if _default is None:
        _default = Client.connect()
    return _default


def configure(kubeconfig: str | None = None, context: str | None = None) -> Client:
    """Choose the kubeconfig and context the SDK uses from now on."""
    global _default
    _default = Client.connect(kubeconfig, context)
    return _default


class SimObject:
    """What a `Task` and a `Batch` share: one object of `KIND` in the cluster, the last copy
    read of it (`obj`), and how it is created, read and read again."""

    KIND: Kind
    #: The prefix of a name the API server generates when none is given.
    GENERATED_NAME_PREFIX: str

    def __init__(self, obj: dict[str, Any], *, client: Client | None = None) -> None:
        self.client = client or default_client()
        self.obj = obj

    @classmethod
    def submit(
        cls,
        spec: dict[str, Any],
        *,
        name: str | None = None,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        client: Client | None = None,
    ) -> Self:
        """Create one from its `spec` (a dict, as in YAML); a name is generated when none is
        given. The API server checks the spec and says what is wrong."""
        client = client or default_client()
        created = client.submit(
            cls.KIND,
            spec,
            name=name,
            generate_name=cls.GENERATED_NAME_PREFIX,
            namespace=namespace,
            labels=labels,
        )
        return cls(created, client=client)

    @classmethod
    def get(cls, name: str, namespace: str | None = None, *, client: Client | None = None) -> Self:
        """The one named `name` (NotFoundError when there is none)."""
        client = client or default_client()
        return cls(client.get(cls.KIND, namespace or client.namespace, name), client=client)

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    def refresh(self) -> Self:
        """Read it again; returns self."""
        self.obj = self.client.get(self.KIND, self.namespace, self.name)
        return self
