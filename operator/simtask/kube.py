"""A thin JSON client over kubernetes_asyncio: plain dicts in and out, errors with their HTTP code.

kubernetes_asyncio loads the credentials (kubeconfig or in-cluster, with token refresh);
requests bypass its model classes, since the operator works on the API's JSON as it is.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

from simtask import metrics

Obj = dict[str, Any]


class ApiError(Exception):
    """A request the API server refused."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


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
        conn = api.rest_client.pool_manager.connector
        if isinstance(conn, aiohttp.TCPConnector):
            conn._limit = max(
                conn.limit, 64
            )  # more concurrent requests than the default 100/host pool

    async def raw(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> aiohttp.ClientResponse:
        """The raw response (for watches): the caller reads and releases it."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        resp: aiohttp.ClientResponse = await self.api.call_api(
            path,
            method,
            query_params=list((params or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
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
    ) -> Obj:
        """A request whose answer is JSON; non-2xx answers raise ApiError."""
        async with await self.raw(
            method, path, params, body, content_type, self.request_timeout
        ) as resp:
            text = await resp.text()
        data: Obj = json.loads(text) if text else {}
        if resp.status >= 300:
            metrics.API_ERRORS.labels(method.lower(), resource, str(resp.status)).inc()
            raise ApiError(resp.status, str(data.get("reason", "")), str(data.get("message", text)))
        return data

    async def watch_request(self, path: str, params: dict[str, str]) -> aiohttp.ClientResponse:
        """For informers: a list or watch GET (watch requests get no total timeout)."""
        timeout = None if params.get("watch") else self.request_timeout
        return await self.raw("GET", path, params, timeout=timeout)

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

    async def delete(self, path: str, *, resource: str, propagation: str = "Background") -> None:
        """Delete; an object already gone is fine."""
        try:
            await self.request(
                "DELETE",
                path,
                resource=resource,
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": propagation,
                },
            )
        except ApiError as exc:
            if exc.code != 404:
                raise
