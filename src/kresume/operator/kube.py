"""The operator's own Kubernetes API calls (kopf handles watching, events and webhooks).

Uses the ``kubernetes`` client with the credentials kopf's ``login_via_client`` also uses
(in-cluster ServiceAccount, else ``KUBECONFIG``). Blocking calls run in threads, in two lanes: the
admission path (policy, Secret, owner reads, the resume epoch's compare-and-swap) has its own threads,
so it never queues behind the pod watch's bookkeeping (:meth:`Kube.update_run_status`, TTL deletes),
which runs in a smaller pool of its own. RBAC each call needs is named in its docstring (the chart
grants exactly these; see ``kresume.operator``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes.client as k8s
from kubernetes.client.exceptions import ApiException

from kresume import contract
from kresume.operator import credentials

#: Seconds one API request may take before it fails (keeps the webhook inside its budget).
REQUEST_TIMEOUT = 2.0
#: Optimistic-concurrency retries of a status read-modify-write (HTTP 409 Conflict).
CONFLICT_RETRIES = 8
#: Threads of the admission lane (API calls an admission waits for) and of the bookkeeping lane (status
#: writes, deletes). The bookkeeping lane is small on purpose: a burst of pod events queues there, not
#: in front of admissions (issue 17 item 5).
ADMISSION_THREADS, BOOKKEEPING_THREADS = 8, 3


class Kube:
    """Async wrappers over the ``kubernetes`` client, plus a small Secret cache.

    ``api`` is a ``kubernetes.client.ApiClient`` (default: one built from the global config).
    """

    def __init__(self, api: k8s.ApiClient | None = None, *, secret_ttl: float = 60.0, owner_ttl: float = 30.0) -> None:
        self._api = api
        self._secret_ttl = secret_ttl
        self._owner_ttl = owner_ttl
        self._owners: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = {}
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}
        self._refreshing: set[tuple[str, str]] = set()
        self._admission_pool = ThreadPoolExecutor(ADMISSION_THREADS, thread_name_prefix="kresume-kube")
        self._bookkeeping_pool = ThreadPoolExecutor(BOOKKEEPING_THREADS, thread_name_prefix="kresume-kube-status")

    @property
    def api(self) -> k8s.ApiClient:
        """The client; built on first use from the in-cluster ServiceAccount, else ``KUBECONFIG``."""
        if self._api is None:
            import kubernetes.config as kconfig

            cfg = k8s.Configuration()
            try:
                kconfig.load_incluster_config(client_configuration=cfg)
            except kconfig.ConfigException:
                kconfig.load_kube_config(client_configuration=cfg)
            self._api = k8s.ApiClient(cfg)
        return self._api

    async def _call(self, fn: Callable[..., Any], *args: Any, bookkeeping: bool = False, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a thread of the admission lane, or of the bookkeeping lane when
        ``bookkeeping`` (module docstring)."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        pool = self._bookkeeping_pool if bookkeeping else self._admission_pool
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kwargs))

    async def version(self) -> dict[str, Any]:
        """The API server's ``/version`` body (no RBAC: allowed to every authenticated user)."""
        info = await self._call(k8s.VersionApi(self.api).get_code)
        return {"major": info.major, "minor": info.minor, "gitVersion": info.git_version}

    async def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data; None when missing. RBAC: secrets get.

        Stale-while-revalidate: a cached value is returned at once; when older than ``secret_ttl`` s it
        is re-read in the background. Only a Secret never read before waits for the API.
        """
        key = (namespace, name)
        hit = self._secrets.get(key)
        if hit is not None:
            if time.monotonic() - hit[0] >= self._secret_ttl and key not in self._refreshing:
                self._refreshing.add(key)
                task = asyncio.get_running_loop().create_task(self._read_secret(key))
                task.add_done_callback(lambda t: (self._refreshing.discard(key), t.cancelled() or t.exception()))
            return hit[1]
        return await self._read_secret(key)

    async def _read_secret(self, key: tuple[str, str]) -> dict[str, str] | None:
        namespace, name = key
        try:
            obj = await self._call(k8s.CoreV1Api(self.api).read_namespaced_secret, name, namespace)
            data = credentials.decode_secret(obj.data)
        except ApiException as exc:
            if exc.status != 404:
                raise
            data = None
        self._secrets[key] = (time.monotonic(), data)
        return data

    async def policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ``CheckpointPolicy`` object, None when missing. RBAC: checkpointpolicies get."""
        return await self._get_custom(contract.POLICY_PLURAL, namespace, name)

    async def run(self, namespace: str, name: str, *, bookkeeping: bool = False) -> dict[str, Any] | None:
        """A ``CheckpointRun`` object, None when missing (read in the bookkeeping lane when ``bookkeeping``).
        RBAC: checkpointruns get."""
        return await self._get_custom(contract.RUN_PLURAL, namespace, name, bookkeeping=bookkeeping)

    async def _get_custom(self, plural: str, namespace: str, name: str, *,
                          bookkeeping: bool = False) -> dict[str, Any] | None:
        api = k8s.CustomObjectsApi(self.api)
        try:
            obj: dict[str, Any] = await self._call(
                api.get_namespaced_custom_object, contract.GROUP, contract.VERSION, namespace, plural, name,
                bookkeeping=bookkeeping,
            )
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def update_run_status(
        self,
        namespace: str,
        name: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        spec: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Read-modify-write ``CheckpointRun.status`` with ``change(status) -> new status | None``.

        Creates the run (owner: none) with ``spec`` when it is missing and ``spec`` is given; retries
        on 409 Conflict (another writer won). ``change`` returning None means nothing to write. Runs in
        the bookkeeping lane; the pod watch calls it through :class:`~kresume.operator.statuswriter.
        StatusWriter`, which carries every pending change of a run in one call.
        RBAC: checkpointruns get/create, checkpointruns/status update.

        Returns the written object, or None when nothing was written.
        """
        api = k8s.CustomObjectsApi(self.api)
        args = (contract.GROUP, contract.VERSION, namespace, contract.RUN_PLURAL)
        for _ in range(CONFLICT_RETRIES):
            obj = await self.run(namespace, name, bookkeeping=True)
            if obj is None:
                if spec is None:
                    return None
                body = {
                    "apiVersion": f"{contract.GROUP}/{contract.VERSION}",
                    "kind": contract.RUN_KIND,
                    "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "kresume"}},
                    "spec": spec,
                }
                try:
                    obj = await self._call(api.create_namespaced_custom_object, *args, body, bookkeeping=True)
                except ApiException as exc:
                    if exc.status == 409:
                        continue
                    raise
            new = change(obj.get("status"))
            if new is None:
                return None
            obj["status"] = new
            try:
                written: dict[str, Any] = await self._call(api.replace_namespaced_custom_object_status, *args, name,
                                                           obj, bookkeeping=True)
                return written
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise RuntimeError(f"CheckpointRun {namespace}/{name}: status kept conflicting after {CONFLICT_RETRIES} tries")

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A pod as a camelCase dict, None when missing (admission lane). RBAC: pods get."""
        try:
            obj = await self._call(k8s.CoreV1Api(self.api).read_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.api.sanitize_for_serialization(obj)  # type: ignore[no-any-return]

    async def owner(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        """A pod's controller, ``Job`` (batch/v1) or ``StatefulSet`` (apps/v1), as a camelCase dict; None when
        missing. Cached ``owner_ttl`` seconds (admissions of a job's pods come in bursts; replicas and
        parallelism rarely change). RBAC: jobs get, statefulsets get."""
        key = (namespace, kind, name)
        hit = self._owners.get(key)
        if hit is not None and time.monotonic() - hit[0] < self._owner_ttl:
            return hit[1]
        if kind == "Job":
            fn = k8s.BatchV1Api(self.api).read_namespaced_job
        elif kind == "StatefulSet":
            fn = k8s.AppsV1Api(self.api).read_namespaced_stateful_set
        else:
            return None
        try:
            obj = self.api.sanitize_for_serialization(await self._call(fn, name, namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            obj = None
        if obj is not None:
            obj.setdefault("kind", kind)
        self._owners[key] = (time.monotonic(), obj)
        return obj

    async def create_run(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Create a ``CheckpointRun`` (owner: none) with ``spec``; None when it exists already (409).
        RBAC: checkpointruns create."""
        api = k8s.CustomObjectsApi(self.api)
        body = {
            "apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.RUN_KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "kresume"}},
            "spec": spec,
        }
        try:
            created: dict[str, Any] = await self._call(api.create_namespaced_custom_object, contract.GROUP,
                                                        contract.VERSION, namespace, contract.RUN_PLURAL, body)
            return created
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    async def replace_run_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
        """Compare-and-swap ``status`` onto the ``CheckpointRun`` ``obj`` as read (its ``resourceVersion``); None
        when another writer changed it since (409 Conflict: read again and decide again). RBAC: checkpointruns/status
        update."""
        api = k8s.CustomObjectsApi(self.api)
        meta = obj.get("metadata") or {}
        body = {**obj, "status": status}
        try:
            written: dict[str, Any] = await self._call(
                api.replace_namespaced_custom_object_status, contract.GROUP, contract.VERSION, meta.get("namespace"),
                contract.RUN_PLURAL, meta.get("name"), body)
            return written
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    async def delete_run(self, namespace: str, name: str) -> None:
        """Delete a ``CheckpointRun`` (TTL expiry); a missing one is fine. RBAC: checkpointruns delete."""
        api = k8s.CustomObjectsApi(self.api)
        try:
            await self._call(api.delete_namespaced_custom_object, contract.GROUP, contract.VERSION, namespace,
                             contract.RUN_PLURAL, name, bookkeeping=True)
        except ApiException as exc:
            if exc.status != 404:
                raise
