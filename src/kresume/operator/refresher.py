"""Background refreshes of live runs: the resolver's cache, the store connections and ``CheckpointRun.status.latest``.

* :func:`refresh_loop` — every ``--refresh-interval`` seconds, :func:`refresh_once` over the runs with a live pod
  (and TTL expiry of old runs). One operator-wide task, not a per-object ``@kopf.timer``: kopf puts a finalizer
  on objects with timers, which would make deleting a ``CheckpointRun`` (or its namespace) hang whenever the
  operator is down.
* :func:`observe` — feeds the pod watch to the resolver's :class:`~kresume.operator.activity.Activity`; when a run
  becomes quiet it is refreshed at once, so the replacement pod's admission is answered from memory.
* :func:`spawn` — fire-and-forget tasks with a strong reference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from kresume import contract, identity
from kresume.operator import admission, credentials, decisions, detached, metrics, podevents, statuswriter
from kresume.operator.kube import Kube
from kresume.policy import Policy

logger = logging.getLogger(__name__)


def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coro`` in the background, keeping a strong reference until it ends (the loop keeps weak ones)."""
    task = detached.create_task(coro)  # not holding the pod event that started it
    BACKGROUND.add(task)
    task.add_done_callback(BACKGROUND.discard)
    return task


async def refresh_once(state: admission.State, live: Any, runs: Any, policies: Any, *,
                       sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Refresh every live run (cache + ``status.latest``/``checkpoints``) and expire old runs (TTL).

    Paced: refreshes start at most ``refresh_rate`` per second (:class:`~kresume.operator.settings.ResolutionSettings`;
    a round of N live runs takes at least N / rate seconds) and at most ``workers // 2`` run at once, so the other
    half of the resolver's threads stays free for admissions and the operator's CPU is bounded whatever the number
    of live runs (at 2,000 of them an unpaced round kept it busy: bench/RESULTS.md "Operator at cluster scale").
    Only the refreshes under way exist as tasks. ``sleep`` is ``asyncio.sleep`` (tests record the pacing).
    """
    api: Kube = state.api  # type: ignore[assignment]
    live_keys = sorted(key for key in list(live) if live.get(key))
    sem = asyncio.Semaphore(max(1, state.config.resolution.workers // 2))
    rate = state.config.resolution.refresh_rate
    loop = asyncio.get_running_loop()

    async def one(key: tuple[str, str], obj: dict[str, Any]) -> None:
        try:
            spec = obj.get("spec") or {}
            await refresh_run(state, key, spec["url"], spec.get("policy") or contract.DEFAULT_POLICY_NAME, policies,
                              indexed=obj.get("status") or {})
        finally:
            sem.release()

    started: set[asyncio.Task[None]] = set()
    t0 = loop.time()
    for i, key in enumerate(live_keys):
        obj = admission._first(runs, key) or {}
        if not (obj.get("spec") or {}).get("url"):
            continue
        if rate > 0 and (delay := t0 + i / rate - loop.time()) > 0:
            await sleep(delay)
        await sem.acquire()
        task = loop.create_task(one(key, obj))
        started.add(task)
        task.add_done_callback(started.discard)
    if started:
        await asyncio.gather(*started)

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
                      policies: Any, *, indexed: dict[str, Any] | None = None) -> None:
    """Ask the store for run ``key`` = (namespace, run) at ``url`` now, with the credentials of policy
    ``policy_name``: fills the resolver's cache and writes ``status.latest``/``checkpoints``. Failures
    are logged and counted, never raised.

    ``indexed``: the run's status as the operator's index holds it (kopf's watch). When the store's answer
    changes nothing in it, the run is neither read nor written through the API: a refresh of an unchanged run
    costs no API request (with thousands of live runs those reads were most of the operator's idle CPU,
    bench/RESULTS.md "Operator at cluster scale"). An index that lags a write only costs a read-compare."""
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
                latest["committedAt"] = rfc3339(entry.committed_at)
        waiting = decisions.waiting_for_ranks(await pending_steps(state, url, options),
                                             latest.get("step") if latest else None)
        WAITING[url] = len(waiting or [])
        metrics.STEPS_WAITING.set(sum(WAITING.values()))
        pending = decisions.pending_summary(waiting)
        if indexed is not None and decisions.record_latest(indexed, latest, entry.checkpoints, pending=pending) is None:
            return
        await statuswriter.post(state, key[0], key[1], lambda s: decisions.record_latest(
            s, latest, entry.checkpoints, pending=pending))
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
        metrics.REFRESH_ERRORS.inc()
        logger.warning("refreshing run %s/%s failed: %s", key[0], key[1], exc)


#: Steps waiting for ranks, per run URL (the sum is ``kresume_steps_waiting_for_ranks``).
WAITING: dict[str, int] = {}


async def pending_steps(state: admission.State, url: str, options: dict[str, Any]) -> list[int] | None:
    """Steps of multi-rank checkpoints some rank has recorded its part of but that are not committed yet, newest
    first, from :meth:`RunStore.pending` (docs/store-protocol.md "Commit of a multi-rank checkpoint"). None when
    the store cannot say (it failed: logged; ``status.pending`` is then left as it is). Part records are
    immutable and cached per store handle, so a refresh re-reads only the listings."""
    def read(store: Any) -> list[int]:
        return sorted({w.step for w in store.pending() if isinstance(w.step, int) and w.step >= 0}, reverse=True)

    try:
        return await state.resolver.call(url, options, read)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - the status of the rest of the run must still be written
        logger.warning("listing the pending multi-rank steps of %s failed: %s", url, exc)
        return None


def observe(pod: dict[str, Any], etype: str | None, state: admission.State, run: identity.RunIdentity) -> None:
    """Feed a pod watch event to the resolver's :class:`Activity`; when it makes the run quiet, refresh
    the run at once (in the background), so the replacement pod's admission is answered from memory."""
    activity = state.resolver.activity
    meta = pod.get("metadata") or {}
    url = podevents.pod_run_url(pod)
    if activity is None or url is None or contract.ANN_INJECTED not in (meta.get("annotations") or {}):
        return
    key = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
    if not activity.observed(url, key, pod, deleted=etype == "DELETED"):
        return
    try:
        pname = decisions.policy_name(pod)
    except decisions.PolicyNameError:
        return
    spawn(refresh_run(state, (meta.get("namespace") or "", run.run), url, pname, state.views.policies))


#: Strong references to fire-and-forget tasks (the event loop keeps only weak ones).
BACKGROUND: set[asyncio.Task[None]] = set()


def rfc3339(value: str) -> str:
    """An ISO-8601 time as RFC 3339 UTC with ``Z`` (the CRD's ``format: date-time``)."""
    when = decisions.parse_time(value)
    if when is None:
        return value
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def refresh_loop(state: admission.State) -> None:
    """Refresh live runs every ``refresh_interval`` s, once the views are :attr:`ready
    <kresume.operator.views.Views.ready>`: a half-listed view would expire runs whose live pods are not seen yet
    (and a passive peered replica, whose watch is paused, never lists: it writes no statuses)."""
    v = state.views
    while True:
        await asyncio.sleep(state.config.resolution.refresh_interval)
        if not v.ready:
            continue
        try:
            await refresh_once(state, v.live, v.runs, v.policies)
        except Exception:  # noqa: BLE001
            logger.exception("refresh of live runs failed")
