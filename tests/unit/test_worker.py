"""The reconcile worker: what a failed pass leads to (retry with backoff, Stalled, or nothing)."""

from __future__ import annotations

import asyncio
from typing import Any

from simtask import metrics
from simtask.kube import ApiError
from simtask.reconciler import ActionFailed, Controller


class NoApi:
    """Nothing here talks to an API server: the worker is driven by hand."""

    async def watch_request(self, *args: Any) -> Any:
        raise AssertionError("no request expected")


def errors() -> float:
    return sum(
        s.value
        for f in metrics.RECONCILE_ERRORS.collect()
        for s in f.samples
        if s.name.endswith("_total")
    )


def run_once(exc: Exception) -> tuple[Controller, float]:
    controller = Controller(NoApi(), workers=1)  # type: ignore[arg-type]

    async def main() -> None:
        async def handle(key: Any) -> None:
            raise exc

        controller.group_queue.add("gone")
        worker = asyncio.create_task(controller._worker(controller.group_queue, handle, "MG"))
        await asyncio.sleep(0.05)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    before = errors()
    asyncio.run(main())
    return controller, errors() - before


def test_an_object_deleted_during_its_pass_is_no_error_and_no_retry() -> None:
    controller, counted = run_once(ApiError(404, "NotFound", 'machinegroups "gone" not found'))
    assert counted == 0
    assert controller.group_queue.failures("gone") == 0


def test_a_failed_action_is_counted_and_retried_with_backoff() -> None:
    controller, counted = run_once(ActionFailed("JobCreateFailed", "exceeded quota"))
    assert counted == 1
    assert controller.group_queue.failures("gone") == 1
