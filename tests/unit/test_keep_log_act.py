"""The act of keeping a log: one read, one create; whatever fails is a warning, never the task's."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from simtask.decide import KeepLog
from simtask.keptlogs import MAX_LOG_BYTES, TAIL_LINES
from simtask.kube import ApiError
from simtask.reconciler import Controller
from tests.unit.fixtures import NAMESPACE, TASK_NAME, task

ACTION = KeepLog(1, f"{TASK_NAME}-a1", f"{TASK_NAME}-a1-x7k2p")


class FakeApi:
    """The two requests of keeping a log, answered as told; records what was asked."""

    def __init__(self, log: bytes | Exception, create: Exception | None = None) -> None:
        self.log, self.create_error = log, create
        self.reads: list[tuple[str, dict[str, str], int]] = []
        self.created: list[dict[str, Any]] = []

    async def watch_request(self, *args: Any) -> Any:
        raise AssertionError("no watch expected")

    async def read_tail(
        self,
        path: str,
        *,
        resource: str,
        params: dict[str, str],
        keep: int,
        timeout: float,  # noqa: ASYNC109 - Kube.read_tail's signature
    ) -> bytes:
        self.reads.append((path, params, keep))
        if isinstance(self.log, Exception):
            raise self.log
        return self.log[-keep:]

    async def create(self, path: str, body: dict[str, Any], *, resource: str) -> dict[str, Any]:
        assert path == f"/api/v1/namespaces/{NAMESPACE}/configmaps"
        if self.create_error is not None:
            raise self.create_error
        self.created.append(body)
        return body


def keep(api: FakeApi) -> None:
    controller = Controller(api, workers=1)  # type: ignore[arg-type]
    asyncio.run(controller._keep_log(task(), ACTION))


def test_the_log_is_read_once_bounded_and_kept() -> None:
    api = FakeApi(b"mesh read\nFATAL: diverged\n")
    keep(api)
    ((path, params, limit),) = api.reads
    assert path == f"/api/v1/namespaces/{NAMESPACE}/pods/{ACTION.pod_name}/log"
    assert params == {"container": "simulator", "tailLines": str(TAIL_LINES)}
    assert limit == MAX_LOG_BYTES + 1
    (cm,) = api.created
    assert cm["metadata"]["name"] == f"{TASK_NAME}-a1-log"
    assert cm["data"] == {"log": "mesh read\nFATAL: diverged\n"}


def test_a_long_log_is_kept_cut_and_says_so() -> None:
    api = FakeApi(b"".join(f"line {i}\n".encode() for i in range(100_000)))
    keep(api)
    (cm,) = api.created
    assert cm["metadata"]["annotations"]["simtask.dev/log-truncated"] == "true"
    assert cm["data"]["log"].endswith("line 99999\n") and len(cm["data"]["log"]) <= MAX_LOG_BYTES


@pytest.mark.parametrize(
    ("log", "create", "level"),
    [
        # The pod is gone: nothing to keep, nothing wrong.
        (ApiError(404, "NotFound", 'pods "x" not found'), None, None),
        # The kubelet cannot be reached, or has no log for it.
        (ApiError(500, "InternalError", "dial tcp 10.0.0.7:10250: i/o timeout"), None, "WARNING"),
        (ApiError(400, "BadRequest", "no logs found for container"), None, "WARNING"),
        (TimeoutError(), None, "WARNING"),
        # Kept already, before a restart or by another replica: left alone.
        (b"log\n", ApiError(409, "AlreadyExists", "configmaps exists"), None),
        (b"log\n", ApiError(403, "Forbidden", "configmaps is forbidden"), "WARNING"),
    ],
)
def test_what_fails_is_at_most_a_warning(
    log: bytes | Exception,
    create: Exception | None,
    level: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="simtask.reconciler"):
        keep(FakeApi(log, create))  # raises nothing
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in warnings] == ([level] if level else [])
    assert all(r.levelno < logging.ERROR for r in caplog.records)
