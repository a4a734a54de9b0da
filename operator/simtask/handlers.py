"""kopf wiring: our CRDs' watch events feed the controller; start-up and clean-up run it."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from simtask import GROUP, VERSION
from simtask.kube import Kube, load_client
from simtask.reconciler import Controller

FINALIZER = f"{GROUP}/finalizer"


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings, set once: we post our own events, keep no state in annotations,
    and bound every watch so a silent connection is noticed (kopf issues #585, #698, #787)."""
    settings.posting.level = logging.WARNING
    # Our handlers are all on.event, which never adds a finalizer (deletion cascades through
    # owner references); should kopf ever need one, it is in our own domain.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.scanning.disabled = True
    # Our event handlers only feed the work queue, so kopf's per-object workers must not be
    # capped: a cap makes a burst of new tasks wait for idle workers to time out.
    settings.queueing.worker_limit = None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the service account; elsewhere, the kubeconfig."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    workers = int(memo.get("workers", 32))
    configure(settings)
    api = await load_client()
    controller = Controller(Kube(api), workers=workers)
    memo["api"] = api
    memo["controller"] = controller
    await controller.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.stop()
    api = memo.get("api")
    if api is not None:
        await api.close()


@kopf.on.event(GROUP, VERSION, "simulationtasks")
def task_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["controller"].on_task_event(str(event["type"] or "ADDED"), dict(event["object"]))


@kopf.on.event(GROUP, VERSION, "machinegroups")
def group_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["controller"].on_group_event(str(event["type"] or "ADDED"), dict(event["object"]))


@kopf.on.probe(id="caches")
def caches_synced(memo: kopf.Memo, **_: Any) -> bool:
    controller: Controller | None = memo.get("controller")
    return controller is not None and controller.ready.is_set()
