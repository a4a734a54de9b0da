"""Leader election on a coordination.k8s.io Lease, with client-go's rules.

A candidate takes the Lease when it is free, or when its holder has not renewed it for
`lease_duration` as measured on the candidate's own clock (from when it last saw the record
change, so clock skew between replicas does not matter). The leader renews every
`retry_period`; when it has not managed to for `renew_deadline`, it stops leading before any
standby may take over. Every request has a deadline shorter than the renew deadline: a
leader whose connection went silent notices it has lost the Lease in time.

kubernetes_asyncio's `leaderelection` has the same loop but its requests carry no deadline,
so a leader behind a half-open connection would hang in a renew while a standby takes over.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp

from simtask.kube import ApiError, Kube
from simtask.timestamps import parse_ts

logger = logging.getLogger(__name__)

Obj = dict[str, Any]


def _micro_ts(when: datetime) -> str:
    """A Lease's MicroTime."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaign for one Lease; run the leader's work while it is held."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 10.0,
        renew_deadline: float = 7.0,
        retry_period: float = 2.0,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period * 1.2:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        #: The holder and renew time last seen, and when (monotonic) we saw them change.
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self.leading = asyncio.Event()

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Wait for the Lease, then run `lead()` until the Lease is lost (return) or `lead`
        returns. On cancellation, a held Lease is released so a standby takes over at once."""
        while not await self._try_acquire_or_renew():  # noqa: ASYNC110 - polling the server
            await asyncio.sleep(self.retry_period * (1 + 0.2 * random.random()))
        logger.info("leading: holding Lease %s/%s as %s", self.namespace, self.name, self.identity)
        self.leading.set()
        work: asyncio.Task[None] = asyncio.create_task(lead(), name="leader-work")
        renew = asyncio.create_task(self._renew_loop(), name="leader-renew")
        try:
            done, _ = await asyncio.wait({work, renew}, return_when=asyncio.FIRST_COMPLETED)
            if renew in done:
                logger.error("lost Lease %s/%s: stopping", self.namespace, self.name)
        except asyncio.CancelledError:
            await self._release()
            raise
        finally:
            self.leading.clear()
            for task in (work, renew):
                task.cancel()
            await asyncio.gather(work, renew, return_exceptions=True)
        if work in done:
            work.result()

    async def _renew_loop(self) -> None:
        """Renew until a renewal could not be made within the renew deadline."""
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            while not await self._try_acquire_or_renew():
                if time.monotonic() - last_renewed >= self.renew_deadline:
                    return
                await asyncio.sleep(self.retry_period / 2)
            last_renewed = time.monotonic()

    async def _try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        timeout = max(self.renew_deadline / 2, 1.0)
        try:
            lease = await self.kube.request("GET", self.path, resource="leases", timeout=timeout)
        except ApiError as exc:
            if exc.code != 404:
                logger.warning("Lease %s/%s: %s", self.namespace, self.name, exc)
                return False
            return await self._write("POST", self._lease(None, now), timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.warning("Lease %s/%s: %r", self.namespace, self.name, exc)
            return False
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if time.monotonic() < self._observed_at + duration:
                return False  # Held by another, renewed within its duration.
        return await self._write("PUT", self._lease(lease, now), timeout)

    def _lease(self, current: Obj | None, now: datetime) -> Obj:
        spec = dict((current or {}).get("spec") or {})
        mine = spec.get("holderIdentity") == self.identity
        if not mine:
            spec["acquireTime"] = _micro_ts(now)
            if current is not None:
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=round(self.lease_duration),
            renewTime=_micro_ts(now),
        )
        spec.setdefault("leaseTransitions", 0)
        meta: Obj = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def _write(self, method: str, lease: Obj, timeout: float) -> bool:  # noqa: ASYNC109
        path = self.path if method == "PUT" else self.path.rsplit("/", 1)[0]
        try:
            written = await self.kube.request(
                method, path, resource="leases", body=lease, timeout=timeout
            )
        except ApiError as exc:
            if exc.code not in (409, 404):
                logger.warning("Lease %s/%s: %s", self.namespace, self.name, exc)
            return False  # Someone else wrote first.
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.warning("Lease %s/%s: %r", self.namespace, self.name, exc)
            return False
        spec = written.get("spec") or {}
        self._observed = (str(spec.get("holderIdentity")), str(spec.get("renewTime")))
        self._observed_at = time.monotonic()
        return True

    async def _release(self) -> None:
        """Give the Lease up (a clean shutdown): a standby need not wait for it to expire."""
        try:
            lease = await self.kube.request("GET", self.path, resource="leases", timeout=2.0)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            renew = parse_ts(spec.get("renewTime"))
            lease["spec"] = dict(
                spec,
                holderIdentity=None,
                leaseDurationSeconds=1,
                renewTime=_micro_ts(renew or datetime.now(UTC)),
            )
            await self.kube.request("PUT", self.path, resource="leases", body=lease, timeout=2.0)
            logger.info("released Lease %s/%s", self.namespace, self.name)
        except (ApiError, TimeoutError, OSError) as exc:
            logger.warning("Lease %s/%s not released: %r", self.namespace, self.name, exc)
