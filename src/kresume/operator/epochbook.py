"""The resume epoch of a multi-rank admission, the shell around :mod:`kresume.operator.epochs`.

``CheckpointRun.status.epoch`` is the shared state: an admission reads the run (one GET), decides with
:func:`epochs.decide`, and writes the result back with the run's ``resourceVersion`` (compare-and-swap); when
another admission — of another rank, or on another replica of the operator — wrote first, it reads and decides
again, and then usually joins what the other one started. So every pod admitted into one epoch gets the same
checkpoint and token. A rank joining an epoch reads the bad mark of the epoch's checkpoint first (one GET, as an
answer from memory does); a mark closes the epoch. A new epoch resolves the newest valid checkpoint through the
:class:`~kresume.operator.resolution.Resolver` (same budget and fallbacks as any admission).

:class:`LivePods` (fed by the pod watch) tells which epochs still have a live pod.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kresume import contract
from kresume.injection import Resume
from kresume.operator import decisions, epochs
from kresume.operator.resolution import SOURCE_EPOCH, Outcome, Resolver

logger = logging.getLogger(__name__)

#: Compare-and-swap rounds before an admission gives up writing the epoch (it still injects what it decided).
CAS_ROUNDS = 5


class LivePods:
    """Pods of each epoch token that may still run (fed by the pod watch; event-loop only)."""

    def __init__(self) -> None:
        self._pods: dict[str, set[str]] = {}
        self._ranks: dict[str, dict[int, set[str]]] = {}
        """token -> rank -> live pod keys of that rank (an empty set: seen, none live now)."""

    def observed(self, pod: Mapping[str, Any], *, deleted: bool) -> None:
        meta = pod.get("metadata") or {}
        token = ((meta.get("annotations") or {}).get(contract.ANN_EPOCH) or "").strip()
        if not token:
            return
        key = str(meta.get("uid") or meta.get("name") or "")
        rank = _injected_rank(pod)
        if rank is not None:
            of_rank = self._ranks.setdefault(token, {}).setdefault(rank, set())
            if not deleted and decisions.is_live(dict(pod)):
                of_rank.add(key)
            else:
                of_rank.discard(key)
            if len(self._ranks) > 256:  # tokens only grow; the oldest (dicts keep insertion order) go first
                del self._ranks[next(iter(self._ranks))]
        pods = self._pods.setdefault(token, set())
        if not deleted and decisions.is_live(dict(pod)):
            pods.add(key)
        else:
            pods.discard(key)
            if not pods:
                del self._pods[token]

    def live(self, token: str) -> bool:
        """True while a pod admitted into epoch ``token`` has been seen and has not finished."""
        return bool(self._pods.get(token))

    def rank_pod(self, token: str, rank: int) -> str:
        """``live`` / ``ended`` / ``unseen``: ``rank``'s pod in epoch ``token`` (:data:`epochs.RANK_POD_STATES`)."""
        pods = self._ranks.get(token, {}).get(rank)
        return epochs.UNSEEN if pods is None else epochs.LIVE if pods else epochs.ENDED


def _injected_rank(pod: Mapping[str, Any]) -> int | None:
    """The ``KRESUME_RANK`` the webhook injected into one of the pod's containers (None: none)."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for e in c.get("env") or []:
            if e.get("name") == contract.ENV_RANK and str(e.get("value") or "").isdigit():
                return int(e["value"])
    return None


@dataclass(frozen=True)
class Admitted:
    """The epoch a rank was admitted into, and how its checkpoint was found (``outcome.source`` is ``epoch``
    for a join)."""

    epoch: epochs.Epoch
    outcome: Outcome
    joined: bool


async def admit(api: Any, resolver: Resolver, live: LivePods, *, namespace: str, run: str, spec: dict[str, Any],
                url: str, options: Mapping[str, Any], rank: int, world_size: int, join_seconds: float,
                budget: float, fallback: Resume | None, dry_run: bool, pod_name: str | None = None) -> Admitted:
    """Admit ``rank`` of ``world_size`` into the run's current epoch or a new one (module docstring).

    ``spec`` is the ``CheckpointRun.spec`` to create the run with when it does not exist yet. A dry run decides
    but writes nothing. ``budget`` (seconds) bounds the whole admission, every compare-and-swap round
    included: each store read gets what is left of it (at least 50 ms), so a rank that loses a round to another
    rank still answers within the webhook's time (each round used to get the whole budget again, so two
    rounds could outlast the handler's limit and admit the pod without kresume). Raises what the API raises (the caller admits the pod without kresume
    then).
    """
    until = time.monotonic() + budget
    decided: Admitted | None = None
    basis: str | None = "-"  # the epoch token ``decided`` was decided on ("-": nothing decided yet)
    for _ in range(CAS_ROUNDS):
        obj = await api.run(namespace, run)
        current = epochs.Epoch.from_status(((obj or {}).get("status") or {}).get("epoch"))
        if decided is not None and (current.token if current else None) == basis:
            pass  # the run was only created meanwhile: what was decided still holds
        else:
            decided = await _decide(resolver, live, namespace, run, url, options, rank, world_size, join_seconds,
                                    max(0.05, until - time.monotonic()), fallback, current,
                                    confirm=_pod_gone(api, namespace, pod_name, until))
            basis = current.token if current else None
        if dry_run:
            return decided
        if obj is None:
            await api.create_run(namespace, run, spec)  # None: created meanwhile; either way read it again
            continue
        status = dict(obj.get("status") or {})
        status["epoch"] = decided.epoch.to_status()
        if await api.replace_run_status(obj, status) is not None:
            return decided
        await asyncio.sleep(0)  # another writer won: read and decide again
    logger.warning("run %s/%s: epoch not recorded after %d conflicting writes; admitting rank %d into %s",
                   namespace, run, CAS_ROUNDS, rank, decided.epoch.token if decided else "-")
    assert decided is not None
    return decided


def _pod_gone(api: Any, namespace: str, name: str | None, until: float) -> Callable[[], Awaitable[bool]] | None:
    """For :func:`_decide`: whether the pod ``name`` being admitted is gone or being deleted at the API server.

    A repeated rank whose pod the watch still holds as live is taken for a retried creation (:func:`epochs.decide`)
    — but a StatefulSet recreates ``name-r`` with the same name as soon as the old object is gone, and its admission
    can reach the operator before the watch event of that deletion does (seen in the two-rank e2e: the recreated
    rank joined its old epoch, the other rank's replacement started a new one, the ranks' parts never met). Two
    pods of one name cannot exist at once, so when the API server has no live pod of this name, the one the watch
    holds is the old one: this admission is a restart. None (no check) for a pod without a name (``generateName``:
    a Job's pods, whose retries the watch and the join window decide). A read that fails or runs past the
    admission's budget (``until``, monotonic s) keeps the watch's answer."""
    if not name:
        return None

    async def gone() -> bool:
        try:
            pod = await asyncio.wait_for(api.pod(namespace, name), timeout=max(0.05, until - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - cannot tell: the watch's answer stands
            logger.info("reading pod %s/%s to tell a retried creation from a restart failed: %s", namespace,
                        name, exc)
            return False
        return pod is None or bool((pod.get("metadata") or {}).get("deletionTimestamp"))

    return gone


async def _decide(resolver: Resolver, live: LivePods, namespace: str, run: str, url: str, options: Mapping[str, Any],
                  rank: int, world_size: int, join_seconds: float, budget: float, fallback: Resume | None,
                  current: epochs.Epoch | None, *,
                  confirm: Callable[[], Awaitable[bool]] | None = None) -> Admitted:
    bad = False
    t0 = time.monotonic()
    if current is not None and current.checkpoint is not None:
        # A mark closes the epoch; a store that does not say in time does not (the ranks must agree).
        bad = bool(await resolver.bad_mark(url, options, current.checkpoint, budget))
    rank_pod = live.rank_pod(current.token, rank) if current is not None else epochs.ENDED
    if current is not None and rank in current.ranks and rank_pod == epochs.LIVE and confirm is not None \
            and await confirm():
        rank_pod = epochs.ENDED  # the watch has not handled the old pod's deletion yet; the API server says it is gone
    now = datetime.now(UTC)
    action, why = epochs.decide(current, rank, world_size, now, live=current is not None and live.live(
        current.token), bad=bad, join_seconds=join_seconds, rank_pod=rank_pod)
    if action == epochs.JOIN and current is not None:
        return Admitted(current.joined(rank), Outcome(current.resume, SOURCE_EPOCH, None, 0.0), True)
    outcome = await resolver.resolve(url, options, budget=max(0.05, budget - (time.monotonic() - t0)),
                                     fallback=fallback)
    fresh = epochs.Epoch(epochs.new_token(now), outcome.resume, world_size, decisions.now_iso(now), (rank,))
    logger.info("run %s/%s: new resume epoch %s (%s) at rank %d/%d: %s", namespace, run, fresh.token, why,
                rank, world_size, fresh.checkpoint or "fresh start")
    return Admitted(fresh, outcome, False)
