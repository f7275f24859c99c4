"""Thin kopf handlers: they only wire Kubernetes events to :mod:`admission` and :mod:`decisions`.

``register(registry, config)`` adds every handler to a kopf registry (a fresh one per operator or
test, kopf's own test style):

* ``inject-pod`` — ``@kopf.on.mutate('pods', operations=['CREATE'], labels={inject: 'true'})``;
  the webhook path is ``/inject-pod``.
* indices ``kresume_policies``, ``kresume_runs``, ``kresume_live_pods`` — in-memory views of the
  watched objects, so an admission reads policies and ``CheckpointRun.status.latest`` without an
  API call.
* ``pod-events`` — ``@kopf.on.event('pods')`` for opted-in pods: Events on the pod once it exists
  (it has no uid at admission), ``CheckpointRun`` status (history, restarts, lastPreemption).
* startup/cleanup — the sidecar mode from the server version, and the background refresher of
  live runs (cache, ``status.latest``, TTL). It is one operator-wide task, not a per-object
  ``@kopf.timer``: kopf puts a finalizer on objects with timers, which would make deleting a
  ``CheckpointRun`` (or its namespace) hang whenever the operator is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import kopf

from kresume import contract, identity, injection
from kresume.operator import admission, credentials, decisions, metrics
from kresume.operator.activity import Activity
from kresume.operator.kube import Kube
from kresume.operator.resolution import Resolver
from kresume.operator.settings import OperatorConfig
from kresume.policy import Policy

logger = logging.getLogger(__name__)

INJECT_ID = "inject-pod"
OPT_IN = {contract.LABEL_INJECT: "true"}


def new_state(config: OperatorConfig, api: Kube | None = None) -> admission.State:
    """The process state kopf's memo carries (``memo.kresume``)."""
    # A passive peered replica's pod watch is paused: it cannot tell that a run is quiet.
    activity = Activity(config.resolution.admission_grace) if config.scope.peering is None else None
    return admission.State(
        config=config,
        resolver=Resolver(config.resolution, activity=activity),
        api=api or Kube(secret_ttl=config.resolution.secret_ttl),
        notes=admission.Notes(ttl=max(120.0, config.runs.event_window)),
    )


#: fsspec backends imported at startup, so the first admission does not pay for the import (s3fs with
#: botocore takes 1-3 s on a busy node; the webhook's budget is 2 s).
BACKENDS = ("s3fs", "gcsfs", "adlfs")


def preload_backends() -> list[str]:
    """Import the installed fsspec backends of :data:`BACKENDS`; returns those that loaded."""
    import importlib

    loaded = []
    for name in BACKENDS:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - an extra that is not installed
            continue
    return loaded


def rehearse(native: bool) -> None:
    """Run identity, policy parsing, inject and the JSON-patch diff once on a sample pod at startup, so
    lazy imports and first-call setup are not paid by the first real admission."""
    sample = {"metadata": {"generateName": "warmup-", "labels": {"job-name": "warmup", **OPT_IN}},
              "spec": {"containers": [{"name": "trainer", "image": "x"}]}}
    ident = identity.run_identity(sample)
    if not isinstance(ident, identity.RunIdentity):  # a broken identity rule: fail start-up loudly
        raise RuntimeError(f"start-up rehearsal: the sample pod has no run ({ident.message})")
    policy = Policy.from_spec({"storage": "memory://kresume-warmup"})
    out = injection.inject(sample, policy, None, run=ident.run, namespace="default", native_sidecar=native,
                           image="warmup")
    injection.json_patch(sample, out.pod)


def _pod_run_url(pod: dict[str, Any]) -> str | None:
    """The run URL injected into the sidecar's env (``KRESUME_RUN_URL``)."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == contract.SIDECAR_CONTAINER_NAME:
            for e in c.get("env") or []:
                if e.get("name") == contract.ENV_RUN_URL and e.get("value"):
                    return str(e["value"])
    return None


def _recent(pod: dict[str, Any], window: float) -> bool:
    when = decisions.parse_time(str((pod.get("metadata") or {}).get("creationTimestamp") or ""))
    if when is None:
        return True
    return (datetime.now(UTC) - when).total_seconds() <= window


class _Seen:
    """Bounded set of pod uids whose admission Events were posted (an LRU of ``limit`` entries)."""

    def __init__(self, limit: int = 20000) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, uid: str) -> bool:
        """Record ``uid``; False when it was already there."""
        if uid in self._items:
            return False
        self._items[uid] = None
        while len(self._items) > self._limit:
            self._items.popitem(last=False)
        return True


def _post_admission_events(body: Any, pod: dict[str, Any], state: admission.State, run: str | None) -> None:
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    for note in state.notes.pop(meta.get("namespace") or "", admission.note_key(pod, run)):
        kopf.event(body, type="Warning", reason=note.reason, message=note.message)
    if contract.ANN_INJECTED not in ann:
        return
    resumed = ann.get(contract.ANN_RESUMED_FROM, "none")
    if resumed and resumed != "none":
        step = ann.get(contract.ANN_RESUMED_STEP)
        kopf.event(body, type="Normal", reason="Resumed", message=f"run {run}: resuming from {resumed}" + (f" (step {step})" if step else ""))
    else:
        kopf.event(body, type="Normal", reason="FreshStart", message=f"run {run}: no committed checkpoint; starting fresh")
    error = ann.get(contract.ANN_RESOLVE_ERROR)
    if error:
        kopf.event(body, type="Warning", reason="ResolveFailed",
                  message=f"newest checkpoint not confirmed by the store ({error}); injected the last known value")


async def _record(pod: dict[str, Any], event_type: str | None, state: admission.State, run: identity.RunIdentity) -> None:
    meta = pod.get("metadata") or {}
    ns, name = meta.get("namespace") or "", meta.get("name") or ""
    limit = state.config.runs.history_limit
    api: Kube = state.api  # type: ignore[assignment]
    if event_type in (None, "ADDED") and contract.ANN_INJECTED in (meta.get("annotations") or {}):
        url = _pod_run_url(pod)
        if url:
            try:
                pname = decisions.policy_name(pod)
            except decisions.PolicyNameError:
                pname = contract.DEFAULT_POLICY_NAME
            spec = decisions.run_spec(run=run.run, policy=pname, url=url, source=run.source, group=run.group,
                                      rank=run.rank)
            entry = decisions.admission_entry(pod, meta.get("creationTimestamp") or decisions.now_iso())
            await api.update_run_status(ns, run.run, lambda s: decisions.record_admission(s, entry, limit=limit),
                                        spec=spec)
    reason = decisions.disruption(pod)
    if reason and name:
        when = decisions.now_iso()
        created = meta.get("creationTimestamp")
        await api.update_run_status(ns, run.run, lambda s: decisions.record_disruption(s, name, reason, when, created))


async def refresh_once(state: admission.State, live: Any, runs: Any, policies: Any) -> None:
    """Refresh every live run (cache + ``status.latest``/``checkpoints``) and expire old runs (TTL)."""
    api: Kube = state.api  # type: ignore[assignment]
    live_keys = {key for key in list(live) if live.get(key)}
    sem = asyncio.Semaphore(max(1, state.config.resolution.workers // 2))

    async def one(key: tuple[str, str]) -> None:
        spec = (admission._first(runs, key) or {}).get("spec") or {}
        if spec.get("url"):
            async with sem:
                await refresh_run(state, key, spec["url"], spec.get("policy") or contract.DEFAULT_POLICY_NAME, policies)

    await asyncio.gather(*(one(k) for k in live_keys))

    ttl = state.config.runs.ttl_seconds
    if ttl > 0:
        now = datetime.now(UTC)
        for key in list(runs):
            obj = admission._first(runs, key)
            if obj is not None and decisions.expired(obj, ttl_seconds=ttl, now=now, live=key in live_keys):
                try:
                    await api.delete_run(*key)
                    state.resolver.forget(((obj.get("spec") or {}).get("url")) or "")
                    logger.info("deleted CheckpointRun %s/%s (no live pod, idle over %g s)", key[0], key[1], ttl)
                except Exception as exc:  # noqa: BLE001
                    logger.warning("deleting expired run %s/%s failed: %s", key[0], key[1], exc)


async def refresh_run(state: admission.State, key: tuple[str, str], url: str, policy_name: str,
                      policies: Any) -> None:
    """Ask the store for run ``key`` = (namespace, run) at ``url`` now, with the credentials of policy
    ``policy_name``: fills the resolver's cache and writes ``status.latest``/``checkpoints``. Failures
    are logged and counted, never raised."""
    api: Kube = state.api  # type: ignore[assignment]
    pspec = admission._first(policies, (key[0], policy_name))
    if pspec is None:
        return
    try:
        policy = Policy.from_spec(pspec)
        secret = await api.secret(key[0], policy.credentials_secret) if policy.credentials_secret else None
        options = credentials.storage_options(url, policy.storage_options, secret)
        entry = await state.resolver.refresh(url, options)
        latest = None
        if entry.resume is not None:
            latest = {"url": entry.resume.url, "checkpoint": entry.resume.checkpoint}
            if entry.resume.step is not None:
                latest["step"] = entry.resume.step
            if entry.committed_at:
                latest["committedAt"] = _rfc3339(entry.committed_at)
        await api.update_run_status(key[0], key[1], lambda s: decisions.record_latest(s, latest, entry.checkpoints))
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
        metrics.REFRESH_ERRORS.inc()
        logger.warning("refreshing run %s/%s failed: %s", key[0], key[1], exc)


def _observe(pod: dict[str, Any], etype: str | None, state: admission.State, run: identity.RunIdentity,
             indices: dict[str, Any]) -> None:
    """Feed a pod watch event to the resolver's :class:`Activity`; when it makes the run quiet, refresh
    the run at once (in the background), so the replacement pod's admission is answered from memory."""
    activity = state.resolver.activity
    meta = pod.get("metadata") or {}
    url = _pod_run_url(pod)
    if activity is None or url is None or contract.ANN_INJECTED not in (meta.get("annotations") or {}):
        return
    key = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
    if not activity.observed(url, key, pod, deleted=etype == "DELETED") or not indices:
        return
    try:
        pname = decisions.policy_name(pod)
    except decisions.PolicyNameError:
        return
    task = asyncio.get_running_loop().create_task(
        refresh_run(state, (meta.get("namespace") or "", run.run), url, pname, indices["policies"]))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


#: Strong references to fire-and-forget tasks (the event loop keeps only weak ones).
_BACKGROUND: set[asyncio.Task[None]] = set()


def _rfc3339(value: str) -> str:
    """An ISO-8601 time as RFC 3339 UTC with ``Z`` (the CRD's ``format: date-time``)."""
    when = decisions.parse_time(value)
    if when is None:
        return value
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _refresh_loop(state: admission.State, indices: dict[str, Any]) -> None:
    """Refresh live runs every ``refresh_interval`` s. kopf gives indices to resource handlers only
    (not to startup activities), so ``indices`` is filled by the first pod event."""
    while True:
        await asyncio.sleep(state.config.resolution.refresh_interval)
        if not indices:
            continue
        try:
            await refresh_once(state, indices["live"], indices["runs"], indices["policies"])
        except Exception:  # noqa: BLE001
            logger.exception("refresh of live runs failed")


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> kopf.OperatorRegistry:
    """Add kresume's handlers to ``registry`` (returned). ``config`` is used at startup when the
    memo carries no state yet (``kopf run`` without ``kresume operator``)."""
    seen = _Seen()
    indices: dict[str, Any] = {}

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(memo: Any, logger: Any, **_: Any) -> None:
        if getattr(memo, "kresume", None) is None:
            memo.kresume = new_state(config)
        state: admission.State = memo.kresume
        version = await state.api.version()  # type: ignore[attr-defined]
        state.native = decisions.native_sidecar(state.config.injection.native_sidecar, decisions.server_version(version))
        logger.info("API server %s: sidecar mode %s", version.get("gitVersion"), "native" if state.native else "regular container")
        loaded = await asyncio.to_thread(preload_backends)
        logger.info("fsspec backends loaded: %s", ", ".join(loaded) or "none")
        rehearse(state.native)
        memo.kresume_refresher = asyncio.get_running_loop().create_task(_refresh_loop(state, indices))

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        task = getattr(memo, "kresume_refresher", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if getattr(memo, "kresume", None) is not None:
            memo.kresume.resolver.close()

    # Explicit ids: kopf passes an index to handlers as a kwarg named by its id, and the default id of a
    # nested function is its qualname ("register.<locals>.kresume_policies").
    @kopf.index(contract.GROUP, contract.VERSION, contract.POLICY_PLURAL, id="kresume_policies", registry=registry)
    def kresume_policies(namespace: str, name: str, spec: Any, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): dict(spec)}

    @kopf.index(contract.GROUP, contract.VERSION, contract.RUN_PLURAL, id="kresume_runs", registry=registry)
    def kresume_runs(namespace: str, name: str, body: Any, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): {"spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {}),
                                    "metadata": {"creationTimestamp": body.metadata.get("creationTimestamp")}}}

    @kopf.index("pods", id="kresume_live_pods", labels=OPT_IN, registry=registry)
    def kresume_live_pods(namespace: str, name: str, body: Any, **_: Any) -> dict[Any, Any] | None:
        pod = dict(body)
        if contract.ANN_INJECTED not in (body.metadata.annotations or {}) or not decisions.is_live(pod):
            return None
        ident = identity.run_identity(pod)
        return {(namespace, ident.run): name} if isinstance(ident, identity.RunIdentity) else None

    def capture(kwargs: dict[str, Any]) -> None:
        """Remember kopf's index objects: only resource handlers get them (not activities, and not
        admission handlers in kopf 1.45), yet the webhook and the refresher need them."""
        if not indices and "kresume_policies" in kwargs:
            indices.update(live=kwargs["kresume_live_pods"], runs=kwargs["kresume_runs"],
                           policies=kwargs["kresume_policies"])

    @kopf.on.mutate("pods", id=INJECT_ID, operations=["CREATE"], labels=OPT_IN, registry=registry)
    async def inject_pod(**kwargs: Any) -> None:
        # Only **kwargs: a signature mismatch would raise inside kopf and DENY the pod.
        try:
            capture(kwargs)
            state: admission.State = kwargs["memo"].kresume
            pod = _plain(kwargs["body"])
            result = await admission.admit(
                pod, pod.get("metadata", {}).get("namespace"), state,
                policies=kwargs.get("kresume_policies", indices.get("policies")),
                runs=kwargs.get("kresume_runs", indices.get("runs")),
                dry_run=bool(kwargs.get("dryrun")),
            )
            kwargs["warnings"].extend(result.warnings)
            if result.pod is not None:
                kwargs["patch"].fns.append(injection.replace_body(result.pod))
        except Exception:  # noqa: BLE001 - never block pod creation (admit() already catches; belt and braces)
            logger.exception("inject-pod: unexpected failure; admitting unchanged")

    @kopf.on.event(contract.GROUP, contract.VERSION, contract.POLICY_PLURAL, id="policy-events", registry=registry)
    async def policy_events(**kwargs: Any) -> None:
        """Warm a policy's credentials Secret and store client, so admissions do not pay for their setup."""
        capture(kwargs)
        state: admission.State = kwargs["memo"].kresume
        ns = kwargs.get("namespace")
        if not ns or (kwargs.get("event") or {}).get("type") == "DELETED":
            return
        try:
            policy = Policy.from_spec(dict(kwargs.get("spec") or {}))
            secret = await state.api.secret(ns, policy.credentials_secret) if policy.credentials_secret else None
            await state.resolver.warm(policy.storage, credentials.storage_options(policy.storage,
                                                                                  policy.storage_options, secret))
        except Exception as exc:  # noqa: BLE001 - admission reads and connects again
            logger.warning("policy %s/%s: warming its Secret/store failed: %s", ns, kwargs.get("name"), exc)

    @kopf.on.event("pods", id="pod-events", labels=OPT_IN, registry=registry)
    async def pod_events(event: Any, body: Any, memo: Any, **kwargs: Any) -> None:
        capture(kwargs)
        state: admission.State = memo.kresume
        pod = _plain(body)
        ident = identity.run_identity(pod)
        run = ident if isinstance(ident, identity.RunIdentity) else None
        uid = (pod.get("metadata") or {}).get("uid") or ""
        etype = event.get("type")
        try:
            if run is not None:
                _observe(pod, etype, state, run, indices)
            if etype in (None, "ADDED") and uid and _recent(pod, state.config.runs.event_window) and seen.add(uid):
                _post_admission_events(body, pod, state, run.run if run else None)
            if run is not None and contract.ANN_INJECTED in ((pod.get("metadata") or {}).get("annotations") or {}):
                await _record(pod, etype, state, run)
        except Exception as exc:  # noqa: BLE001 - status is best effort; the next event retries
            logger.warning("pod %s/%s: recording run status failed: %s",
                           (pod.get("metadata") or {}).get("namespace"), (pod.get("metadata") or {}).get("name"), exc)

    return registry


def _plain(body: Any) -> dict[str, Any]:
    """A kopf Body as a plain (deep-copied) dict."""
    return copy.deepcopy(dict(body))
