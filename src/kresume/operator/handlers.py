"""Thin kopf handlers: they only wire Kubernetes events to :mod:`admission` and :mod:`decisions`.

``register(registry, config)`` adds every handler to a kopf registry (a fresh one per operator or
test, kopf's own test style):

* ``inject-pod`` — ``@kopf.on.mutate('pods', operations=['CREATE'], labels={inject: 'true'})``;
  the webhook path is ``/inject-pod``. With the operator's :class:`~kresume.operator.webhook.WebhookServer`
  passed to :func:`register`, the same admission is served from startup on without kopf's admission
  machinery (:func:`serve_review`, :mod:`kresume.operator.review`); the kopf handler answers otherwise.
* ``run-events``, ``policy-events`` and ``pod-events`` feed kresume's in-memory views of the watched objects
  (:mod:`views`: policies, compact CheckpointRuns, live injected pods), so an admission reads policies and
  ``CheckpointRun.status.latest`` without an API call. Not kopf indexes: kopf holds every listed body until all
  of its indexes are filled (bench/RESULTS.md "Operator at cluster scale").
* ``pod-events`` — ``@kopf.on.event('pods')`` for opted-in pods: Events on the pod once it exists
  (it has no uid at admission), ``CheckpointRun`` status (history, restarts, lastPreemption).
  What is recorded: :mod:`podevents`; quiet runs and refreshes: :mod:`refresher`; the crash-loop
  fallback: :mod:`fallback`.
* startup/cleanup — the sidecar mode from the server version, and the background refresher of
  live runs (:func:`refresher.refresh_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import gc
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from kresume import contract, identity, injection
from kresume.operator import (admission, credentials, decisions, fallback, kopf_listing, metrics, podevents, refresher,
                              restores, views)
from kresume.operator import review as reviews
from kresume.operator.activity import Activity
from kresume.operator.kube import Kube
from kresume.operator.resolution import Resolver
from kresume.operator.settings import OperatorConfig
from kresume.operator.statuswriter import StatusWriter
from kresume.policy import Policy

logger = logging.getLogger(__name__)

INJECT_ID = "inject-pod"
OPT_IN = {contract.LABEL_INJECT: "true"}


def new_state(config: OperatorConfig, api: Kube | None = None) -> admission.State:
    """The process state kopf's memo carries (``memo.kresume``)."""
    # A passive peered replica's pod watch is paused: it cannot tell that a run is quiet.
    activity = Activity(config.resolution.admission_grace) if config.scope.peering is None else None
    kube = api or Kube(secret_ttl=config.resolution.secret_ttl)
    return admission.State(
        config=config,
        views=views.Views(kopf_listing.ready),
        resolver=Resolver(config.resolution, activity=activity),
        api=kube,
        notes=admission.Notes(ttl=max(120.0, config.runs.event_window)),
        writer=StatusWriter(kube, delay=config.runs.status_delay),
        events=podevents.EventBudget(config.runs.event_rate, config.runs.event_burst),
    )


#: fsspec backends imported at startup when the operator's default client is fsspec, so the first admission does
#: not pay for the import (s3fs with botocore takes 1-3 s on a busy node; the webhook's budget is 2 s).
BACKENDS = ("s3fs", "gcsfs", "adlfs")


def preload_backends(env: Mapping[str, str] = os.environ) -> list[str]:
    """Import the installed fsspec backends of :data:`BACKENDS` when ``KRESUME_STORE_CLIENT`` is ``fsspec``;
    returns those that loaded. Otherwise none is imported: together they are 36 MiB of the operator's RSS
    (measured: 76 → 112 MiB) while s3:// and az:// policies use the native client, and a policy whose storage
    needs a backend (gs://, ``kresume_client: fsspec``, an option the native client cannot carry) imports it
    when its watch event warms it (``policy-events``, right after the start)."""
    import importlib

    from kresume.store import native

    if str(env.get(native.ENV) or "").strip().lower() != "fsspec":
        return []
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


async def serve_review(state: admission.State, review: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview response to an ``inject-pod`` review that :func:`reviews.handles` accepted (its
    namespace filled in): :func:`admission.admit` of the review's own pod (not copied: nothing changes it),
    answered by :func:`reviews.response`. Never raises: a failure admits the pod unchanged."""
    req = review["request"]
    pod = req["object"]
    try:
        result = await admission.admit(pod, pod.get("metadata", {}).get("namespace"), state,
                                       policies=state.views.policies, runs=state.views.runs,
                                       dry_run=bool(req.get("dryRun")))
        return reviews.response(review, pod, result.pod, result.warnings)
    except Exception:  # noqa: BLE001 - never block pod creation (admit() already catches; belt and braces)
        logger.exception("inject-pod: unexpected failure; admitting unchanged")
        return reviews.response(review, pod, None, [])


def register(registry: kopf.OperatorRegistry, config: OperatorConfig, webhook: Any = None) -> kopf.OperatorRegistry:
    """Add kresume's handlers to ``registry`` (returned). ``config`` is used at startup when the
    memo carries no state yet (``kopf run`` without ``kresume operator``); ``webhook``, the operator's
    :class:`~kresume.operator.webhook.WebhookServer`, gets :func:`serve_review` as its ``inject-pod`` route at
    startup."""
    seen = podevents.Seen()

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
        logger.info("fsspec backends loaded: %s", ", ".join(loaded) or "none (native client; a policy selecting fsspec "
                    "loads its backend when it is warmed)")
        rehearse(state.native)
        freeze_startup_objects()
        watch_views(state.views)
        if webhook is not None:
            webhook.route(INJECT_ID, functools.partial(serve_review, state))
        memo.kresume_refresher = asyncio.get_running_loop().create_task(refresher.refresh_loop(state))

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        task = getattr(memo, "kresume_refresher", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if getattr(memo, "kresume", None) is not None:
            if memo.kresume.writer is not None:  # status changes still waiting for their write (≤ 0.25 s old)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(memo.kresume.writer.flush(), timeout=5)
            memo.kresume.resolver.close()

    @kopf.on.event(contract.GROUP, contract.VERSION, contract.RUN_PLURAL, id="run-events", registry=registry)
    async def run_events(event: Any, body: Any, memo: Any, **_: Any) -> None:  # async: no executor thread per event
        memo.kresume.views.runs.observe(event.get("type"), body)

    @kopf.on.mutate("pods", id=INJECT_ID, operations=["CREATE"], labels=OPT_IN, registry=registry)
    async def inject_pod(**kwargs: Any) -> None:
        # Only **kwargs: a signature mismatch would raise inside kopf and DENY the pod.
        try:
            state: admission.State = kwargs["memo"].kresume
            pod = _plain(kwargs["body"])
            result = await admission.admit(
                pod, pod.get("metadata", {}).get("namespace"), state,
                policies=state.views.policies, runs=state.views.runs, dry_run=bool(kwargs.get("dryrun")),
            )
            kwargs["warnings"].extend(result.warnings)
            if result.pod is not None:
                kwargs["patch"].fns.append(injection.replace_body(result.pod))
        except Exception:  # noqa: BLE001 - never block pod creation (admit() already catches; belt and braces)
            logger.exception("inject-pod: unexpected failure; admitting unchanged")

    @kopf.on.event(contract.GROUP, contract.VERSION, contract.POLICY_PLURAL, id="policy-events", registry=registry)
    async def policy_events(**kwargs: Any) -> None:
        """Warm a policy's credentials Secret and store client, so admissions do not pay for their setup."""
        state: admission.State = kwargs["memo"].kresume
        state.views.policies.observe((kwargs.get("event") or {}).get("type"), kwargs.get("body") or {})
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
        state: admission.State = memo.kresume
        pod = _plain(body)
        state.views.live.observe(event.get("type"), pod)
        ident = identity.run_identity(pod)
        run = ident if isinstance(ident, identity.RunIdentity) else None
        uid = (pod.get("metadata") or {}).get("uid") or ""
        etype = event.get("type")
        try:
            if run is not None:
                refresher.observe(pod, etype, state, run)
                state.live.observed(pod, deleted=etype == "DELETED")
            injected = contract.ANN_INJECTED in ((pod.get("metadata") or {}).get("annotations") or {})
            # Admission events only for recent pods (an operator restart lists old ones); a live opted-in pod that
            # kresume is off for is reported whatever its age.
            fresh = podevents.recent(pod, state.config.runs.event_window) or (not injected and decisions.is_live(pod))
            if etype in (None, "ADDED") and uid and fresh and seen.add(uid):
                podevents.post_admission_events(body, pod, state, run.run if run else None)
            if run is not None and contract.ANN_INJECTED in ((pod.get("metadata") or {}).get("annotations") or {}):
                await podevents.record(pod, etype, state, run)
                if etype != "DELETED":
                    await fallback.observe(pod, state, run, state.views.policies, body=body)
                    await restores.observe(pod, state, run, body)
        except Exception as exc:  # noqa: BLE001 - status is best effort; the next event retries
            logger.warning("pod %s/%s: recording run status failed: %s",
                           (pod.get("metadata") or {}).get("namespace"), (pod.get("metadata") or {}).get("name"), exc)
        metrics.POD_EVENTS.inc()

    return registry


def freeze_startup_objects() -> None:
    """Move every object alive after start-up (imported code, settings: ~300,000 objects) out of the cyclic GC's
    reach (``gc.freeze``), so its full collections scan only what the watch made since.

    Every watch event's body is cyclic garbage once handled: kopf's ``Body`` and ``Patch`` reference their own
    views (``Patch._meta = MetaPatch(self)``), so refcounting never frees them and only a full collection does.
    CPython runs one when the objects that survived younger collections exceed 25 % of the oldest generation,
    which the start-up objects kept ~300,000 large: thousands of handled bodies (~17 KB each) waited for it
    (bench/RESULTS.md "Operator at cluster scale"). Frozen objects are never collected (they live for the
    process anyway). The collection after the freeze resets CPython's count of long-lived objects to what is left
    (nearly nothing), so full collections then run every 100 young ones."""
    gc.collect()
    gc.freeze()
    gc.collect()


def watch_views(v: views.Views) -> None:
    """Serve the views' sizes as ``kresume_indexed_objects`` (read from the metrics thread: ``len`` is atomic)."""
    metrics.INDEXED.labels("policies").set_function(lambda: len(v.policies))
    metrics.INDEXED.labels("runs").set_function(lambda: len(v.runs))
    metrics.INDEXED.labels("live_pods").set_function(lambda: v.live.pods())
    metrics.VIEWS_READY.set_function(lambda: float(v.ready))


def _plain(body: Any) -> dict[str, Any]:
    """A kopf Body as a plain (deep-copied) dict."""
    return copy.deepcopy(dict(body))
