#!/usr/bin/env python3
"""The simulated nodes' volume manager: what a kubelet does before it starts a container.

kwok runs pods without looking at their volumes; a real kubelet first mounts them and, when
a Secret or ConfigMap volume names an object that does not exist (and is not `optional`),
leaves the containers waiting in ContainerCreating and reports a `FailedMount` Warning event
(`MountVolume.SetUp failed for volume "input-creds" : secret "creds" not found`), retrying
until the object appears. This process does that for the local cluster: it watches bound
Pending pods with such volumes and, once every object exists, marks the pod with the
annotation `testbed.simtask.dev/volumes-mounted: "true"`, which pod-stages.yaml waits for
before it starts any container of a pod that has such volumes.

    volumes.py API_URL PKI_DIR     (started and stopped by hack/testbed; standard library only)
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ANNOTATION = "testbed.simtask.dev/volumes-mounted"
#: How often a pod waiting for a missing object is looked at again (the kubelet backs off
#: up to about two minutes; a short, fixed period keeps the local cluster quick).
RETRY_SECONDS = 2.0

Obj = dict[str, Any]


class Api:
    def __init__(self, url: str, pki: Path) -> None:
        self.url = url.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def open(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        return urllib.request.urlopen(req, context=self.ctx, timeout=timeout)

    def call(self, method: str, path: str, **kw: Any) -> Obj | None:
        """The JSON answer; None for a 404."""
        try:
            with self.open(method, path, **kw) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def needed(pod: Obj) -> list[tuple[str, str, str]]:
    """(volume, kind, name) of the Secrets and ConfigMaps the pod must have mounted."""
    found = []
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        for field, kind, key in (
            ("secret", "secret", "secretName"),
            ("configMap", "configmap", "name"),
        ):
            source = volume.get(field)
            if source and not source.get("optional"):
                found.append((volume["name"], kind, str(source.get(key))))
    return found


class VolumeManager:
    def __init__(self, api: Api) -> None:
        self.api = api
        #: Pods waiting for an object, by uid: (namespace, name).
        self.waiting: dict[str, tuple[str, str]] = {}
        #: (pod uid, volume) already reported, so each failure is one event (with a count).
        self.reported: dict[tuple[str, str], Obj] = {}
        self.lock = threading.Lock()

    def consider(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        if (
            not (pod.get("spec") or {}).get("nodeName")
            or (pod.get("status") or {}).get("phase") != "Pending"
            or meta.get("deletionTimestamp")
            or (meta.get("annotations") or {}).get(ANNOTATION) == "true"
            or not needed(pod)
        ):
            self.forget(str(meta.get("uid")))
            return
        self.mount(pod)

    def forget(self, uid: str) -> None:
        with self.lock:
            self.waiting.pop(uid, None)
            for key in [k for k in self.reported if k[0] == uid]:
                del self.reported[key]

    def mount(self, pod: Obj) -> None:
        meta = pod["metadata"]
        ns, uid = meta["namespace"], str(meta["uid"])
        missing = [
            (volume, kind, name)
            for volume, kind, name in needed(pod)
            if self.api.call("GET", f"/api/v1/namespaces/{ns}/{kind}s/{name}") is None
        ]
        if not missing:
            patch = {"metadata": {"annotations": {ANNOTATION: "true"}}}
            self.api.call(
                "PATCH",
                f"/api/v1/namespaces/{ns}/pods/{meta['name']}",
                body=patch,
                content_type="application/merge-patch+json",
            )
            self.forget(uid)
            return
        with self.lock:
            self.waiting[uid] = (ns, meta["name"])
        for volume, kind, name in missing:
            message = f'MountVolume.SetUp failed for volume "{volume}" : {kind} "{name}" not found'
            self.report(pod, volume, message)

    def report(self, pod: Obj, volume: str, message: str) -> None:
        meta = pod["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (str(meta["uid"]), volume)
        with self.lock:
            event = self.reported.get(key)
        if event is not None:  # The kubelet counts a repeated failure on one event.
            event["count"] = int(event.get("count") or 1) + 1
            event["lastTimestamp"] = now
            patch = {"count": event["count"], "lastTimestamp": now}
            self.api.call(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/events/{event['metadata']['name']}",
                body=patch,
                content_type="application/merge-patch+json",
            )
            return
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "reason": "FailedMount",
            "message": message,
            "type": "Warning",
            "source": {"component": "kubelet", "host": pod["spec"]["nodeName"]},
            "reportingComponent": "kubelet",
            "reportingInstance": pod["spec"]["nodeName"],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/events"
        created = self.api.call("POST", path, body=body)
        if created is not None:
            with self.lock:
                self.reported[key] = created

    def watch(self) -> None:
        """Bound Pending pods, forever: list, then watch from the list, again on any failure."""
        selector = {"fieldSelector": "status.phase=Pending,spec.nodeName!="}
        while True:
            try:
                listed = self.api.call("GET", "/api/v1/pods", params=selector) or {}
                for pod in listed.get("items") or ():
                    self.consider(pod)
                params = {
                    **selector,
                    "watch": "1",
                    "resourceVersion": listed["metadata"]["resourceVersion"],
                    "timeoutSeconds": "240",
                }
                with self.api.open("GET", "/api/v1/pods", params=params, timeout=300) as resp:
                    for line in resp:
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self.consider(event["object"])
                        elif event.get("type") == "ERROR":
                            break
            except Exception as exc:  # a kubelet keeps going
                print(f"volumes: watch: {exc!r}", flush=True)
                time.sleep(1)

    def retry(self) -> None:
        """Look again at the pods waiting for an object, as the kubelet retries a mount."""
        while True:
            time.sleep(RETRY_SECONDS)
            with self.lock:
                waiting = list(self.waiting.items())
            for uid, (ns, name) in waiting:
                try:
                    pod = self.api.call("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
                    if pod is None or pod["metadata"]["uid"] != uid:
                        self.forget(uid)
                        continue
                    self.consider(pod)
                except Exception as exc:
                    print(f"volumes: {ns}/{name}: {exc!r}", flush=True)


def main() -> int:
    manager = VolumeManager(Api(sys.argv[1], Path(sys.argv[2])))
    threading.Thread(target=manager.retry, daemon=True).start()
    manager.watch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
