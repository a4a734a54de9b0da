"""A thin JSON client over kubernetes_asyncio: plain dicts in and out, errors with their HTTP code.

kubernetes_asyncio loads the credentials (kubeconfig or in-cluster, with token refresh) and
owns the connection pool; requests go straight to its aiohttp session with bodies encoded
and answers decoded by orjson, bypassing its model classes and its recursive body
sanitising, since the operator works on the API's JSON as it is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from kubernetes_asyncio import client, config

from simtask import metrics

Obj = dict[str, Any]


class ApiError(Exception):
    """A request the API server refused."""

    def __init__(self, code: int, reason: str, message: str, causes: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        #: The reasons of `details.causes` (e.g. NamespaceTerminating).
        self.causes = causes


async def load_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from the in-cluster service account, or else from the kubeconfig."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        conf = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=conf)
        return client.ApiClient(configuration=conf)


class Kube:
    """GET/POST/PATCH/DELETE on API paths, returning parsed JSON."""

    def __init__(self, api: client.ApiClient, request_timeout: float = 30.0) -> None:
        self.api = api
        self.request_timeout = request_timeout
        self.session: aiohttp.ClientSession = api.rest_client.pool_manager
        # Credentials come from the kubeconfig or the service account, never from ~/.netrc
        # or proxy variables: trusting the environment re-reads ~/.netrc on every request.
        self.session._trust_env = False

    async def raw(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109
    ) -> aiohttp.ClientResponse:
        """The raw response (for watches): the caller reads and releases it."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        query: list[tuple[str, str]] = list((params or {}).items())
        # The bearer token, refreshed by kubernetes_asyncio when it comes from a file or a
        # plugin; client certificates are in the session's SSL context.
        await self.api.update_params_for_auth(headers, query, ["BearerToken"])
        url = str(self.api.configuration.host) + path
        if query:
            url += "?" + urlencode(query)
        if isinstance(timeout, (int, float)):
            timeout = aiohttp.ClientTimeout(total=timeout)
        kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout or aiohttp.ClientTimeout()}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
        server_hostname = self.api.configuration.tls_server_name
        if server_hostname:
            kwargs["server_hostname"] = server_hostname
        resp: aiohttp.ClientResponse = await self.session.request(method, url, **kwargs)
        return resp

    async def request(
        self,
        method: str,
        path: str,
        *,
        resource: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Obj:
        """A request whose answer is JSON; non-2xx answers raise ApiError."""
        async with await self.raw(
            method, path, params, body, content_type, timeout or self.request_timeout
        ) as resp:
            raw = await resp.read()
        try:
            data: Obj = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            data = {"message": raw.decode(errors="replace")[:500]}
        if resp.status >= 300:
            metrics.API_ERRORS.labels(method.lower(), resource, str(resp.status)).inc()
            causes = tuple(
                str(c.get("reason")) for c in (data.get("details") or {}).get("causes") or ()
            )
            raise ApiError(
                resp.status, str(data.get("reason", "")), str(data.get("message", "")), causes
            )
        return data

    async def watch_request(
        self, path: str, params: dict[str, str], read_timeout: float | None
    ) -> aiohttp.ClientResponse:
        """For informers: a list GET with the request timeout, or a watch GET with no total
        timeout but a read timeout (a silent watch raises instead of hanging)."""
        timeout: float | aiohttp.ClientTimeout = self.request_timeout
        if params.get("watch"):
            timeout = aiohttp.ClientTimeout(
                connect=self.request_timeout,
                sock_connect=self.request_timeout,
                sock_read=read_timeout,
            )
        return await self.raw("GET", path, params, timeout=timeout)

    async def read_tail(
        self,
        path: str,
        *,
        resource: str,
        params: dict[str, str],
        keep: int,
        timeout: float,  # noqa: ASYNC109
    ) -> bytes:
        """A text answer (a pod's log) streamed within `timeout` seconds, of which only the
        last `keep` bytes are kept; non-2xx answers raise ApiError."""
        async with await self.raw(
            "GET", path, params, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            if resp.status >= 300:
                raw = await resp.content.read(64 * 1024)
                try:
                    data: Obj = orjson.loads(raw) if raw else {}
                except orjson.JSONDecodeError:
                    data = {"message": raw.decode(errors="replace")[:500]}
                metrics.API_ERRORS.labels("get", resource, str(resp.status)).inc()
                raise ApiError(
                    resp.status, str(data.get("reason", "")), str(data.get("message", ""))
                )
            tail = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                tail += chunk
                if len(tail) > 2 * keep:
                    del tail[: len(tail) - keep]
        return bytes(tail[-keep:])

    async def get(self, path: str, *, resource: str) -> Obj | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return await self.request("GET", path, resource=resource)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    async def create(self, path: str, body: Obj, *, resource: str) -> Obj:
        return await self.request("POST", path, resource=resource, body=body)

    async def merge_patch(self, path: str, body: Obj, *, resource: str) -> Obj:
        return await self.request(
            "PATCH", path, resource=resource, body=body, content_type="application/merge-patch+json"
        )

    async def update(self, path: str, body: Obj, *, resource: str) -> Obj:
        return await self.request("PUT", path, resource=resource, body=body)

    async def delete(
        self,
        path: str,
        *,
        resource: str,
        propagation: str = "Background",
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Delete what `path` names, if it is still the object of `uid` (and at
        `resource_version`) when given; an object already gone is fine. A 409 means the
        preconditions no longer hold: someone changed or replaced the object."""
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        if preconditions:
            body["preconditions"] = preconditions
        try:
            await self.request("DELETE", path, resource=resource, body=body)
        except ApiError as exc:
            if exc.code != 404:
                raise
