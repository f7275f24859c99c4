"""The ``inject-pod`` admission decision: identity → policy → resolution → pure inject.

:func:`admit` is what the kopf handler (``handlers.py``) calls; tests call it directly too. It never
raises: any failure admits the pod unchanged with a Warning (pod creation is never blocked by
kresume; the chart's webhook also has ``failurePolicy: Ignore``).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from kresume import contract, identity
from kresume.injection import InjectionError, RankEnv, Resume, inject, validity
from kresume.operator import credentials, decisions, epochbook, metrics, views
from kresume.operator.notes import Note, Notes
from kresume.operator.resolution import Resolver
from kresume.operator.settings import OperatorConfig
from kresume.policy import Policy, RunNameError, run_url

logger = logging.getLogger(__name__)

#: Seconds added to the resolution budget for the rest of the handler (policy/Secret reads, inject);
#: past ``budget + slack`` the pod is admitted unchanged. Budget 2 + 1.5 stays under the chart's 5 s.
HANDLER_SLACK = 1.5


class Api(Protocol):
    """What admission needs from the API (``kube.Kube``); a fake in unit tests."""

    async def secret(self, namespace: str, name: str) -> dict[str, str] | None: ...
    async def policy(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def owner(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None: ...
    async def run(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_run(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any] | None: ...
    async def replace_run_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None: ...


@dataclass
class State:
    """Process-wide operator state, kept in kopf's ``memo`` (``memo.kresume``)."""

    config: OperatorConfig
    resolver: Resolver
    api: Api
    notes: Notes = field(default_factory=Notes)
    native: bool = False
    """Inject native sidecars (decided at startup from ``--native-sidecar`` and the server version)."""
    live: epochbook.LivePods = field(default_factory=epochbook.LivePods)
    """Live pods per resume epoch (fed by the pod watch)."""
    events: Any = None
    """The :class:`~kresume.operator.podevents.EventBudget` of Normal admission Events (None: no limit)."""
    writer: Any = None
    """The :class:`~kresume.operator.statuswriter.StatusWriter` the pod watch's status changes go through
    (None: each change is written at once, as unit tests' fake APIs expect)."""
    views: views.Views = field(default_factory=views.Views)
    """The in-memory views of policies, runs and live pods (fed by the watch; :mod:`~kresume.operator.views`)."""


@dataclass(frozen=True)
class Admission:
    """The result of :func:`admit`.

    pod : dict or None — the mutated pod, None to admit unchanged.
    warnings : list of str — lines for the AdmissionReview ``warnings`` (shown by kubectl).
    outcome : str — ``injected``, ``skipped`` or ``error`` (metrics).
    source : str or None — where the resume checkpoint came from (``store``, ``cache``, …).
    resolve_seconds : float or None — of the handler's time, the seconds spent waiting for the store (for an
        answer from memory: the bad-mark read); None when the store was not asked.
    """

    pod: dict[str, Any] | None
    warnings: list[str]
    outcome: str
    source: str | None = None
    resolve_seconds: float | None = None


def note_key(pod: Mapping[str, Any], run: str | None) -> str:
    """The :class:`Notes` key of a pod: ``run``, else the pod's own run, else its name/generateName."""
    if run:
        return run
    try:
        ident = identity.run_identity(dict(pod))
    except Exception:  # noqa: BLE001 - a key must always be found
        ident = None
    if isinstance(ident, identity.RunIdentity):
        return ident.run
    meta = pod.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName") or "")


def _first(index: Mapping[Any, Any] | None, key: Any) -> Any:
    """The value a :class:`~kresume.operator.views.View` holds for ``key`` (or the first value of a dict of
    lists, as tests pass), or None."""
    if index is None:
        return None
    if isinstance(index, views.View):
        return index.get(key)
    try:
        values = index.get(key)
    except Exception:  # noqa: BLE001 - a kopf Index raises nothing here, but be defensive
        return None
    if values is None:
        return None
    for value in values:
        return value
    return None


def status_fallback(run_obj: Mapping[str, Any] | None) -> Resume | None:
    """``CheckpointRun.status.latest`` as a :class:`Resume` (None when it has no usable latest)."""
    latest = ((run_obj or {}).get("status") or {}).get("latest") or {}
    url, checkpoint = latest.get("url"), latest.get("checkpoint")
    if not url or not checkpoint:
        return None
    step = latest.get("step")
    return Resume(url=str(url), checkpoint=str(checkpoint), name=posixpath.basename(str(url).rstrip("/")),
                  step=int(step) if isinstance(step, int) else None)


async def admit(
    pod: dict[str, Any],
    namespace: str | None,
    state: State,
    *,
    policies: Mapping[Any, Any] | None = None,
    runs: Mapping[Any, Any] | None = None,
    dry_run: bool = False,
) -> Admission:
    """Decide the mutation of a pod being created.

    Parameters
    ----------
    pod : dict
        The pod of the AdmissionReview (``request.object``).
    namespace : str or None
        The pod's namespace (from the review; falls back to ``metadata.namespace``).
    state : State
    policies, runs : views (:mod:`~kresume.operator.views`) or dicts of lists, optional
        ``(namespace, name) -> CheckpointPolicy spec`` and ``(namespace, name) -> CheckpointRun``;
        a policy missing from the index is read from the API.
    dry_run : bool
        The review is a dry run (``kubectl create --dry-run=server``): no pod will exist, so the run
        is not marked busy (:mod:`kresume.operator.activity`).

    Returns
    -------
    Admission
        Never raises: errors are logged, counted and admitted unchanged.
    """
    t0 = time.monotonic()
    deadline = t0 + state.config.resolution.timeout
    namespace = namespace or (pod.get("metadata") or {}).get("namespace") or ""
    budget = state.config.resolution.timeout
    try:
        result = await asyncio.wait_for(
            _admit(pod, namespace, state, policies=policies, runs=runs, deadline=deadline, dry_run=dry_run),
            timeout=budget + HANDLER_SLACK
        )
    except asyncio.TimeoutError:
        result = _skip(state, pod, namespace, None, "AdmissionTimeout",
                       f"kresume could not decide within {budget + HANDLER_SLACK:g} s; pod admitted unchanged",
                       outcome="error")
    except Exception as exc:  # noqa: BLE001 - never block pod creation
        logger.exception("inject-pod failed; admitting the pod unchanged")
        result = _skip(state, pod, namespace, None, "InjectFailed",
                       f"kresume failed ({type(exc).__name__}: {exc}); pod admitted unchanged", outcome="error")
    elapsed = time.monotonic() - t0
    metrics.ADMISSION_SECONDS.observe(elapsed)
    waited = f" (store {result.resolve_seconds * 1000:.1f} ms)" if result.resolve_seconds is not None else ""
    logger.info("inject-pod %s/%s: %s (checkpoint from %s) in %.1f ms%s", namespace, note_key(pod, None),
                result.outcome, result.source or "-", elapsed * 1000, waited)
    metrics.ADMISSIONS.labels(result.outcome).inc()
    if result.source:
        metrics.RESOLUTIONS.labels(result.source).inc()
    return result


async def _owner_facts(state: State, namespace: str, ident: identity.RunIdentity) -> identity.OwnerFacts | None:
    """The facts of the pod's Job or StatefulSet (cached by :class:`~kresume.operator.kube.Kube`); None when it
    has none or the read fails (a rank that needs them is then refused, never guessed)."""
    if ident.controller is None:
        return None
    try:
        obj = await state.api.owner(namespace, *ident.controller)
    except Exception as exc:  # noqa: BLE001 - identity.ranks decides what an unknown owner means
        logger.warning("reading %s %s/%s failed: %s", ident.controller[0], namespace, ident.controller[1], exc)
        return None
    return identity.OwnerFacts.from_object(obj) if obj else None


async def _run_object(state: State, runs: Mapping[Any, Any] | None, namespace: str, run: str) -> Any:
    """The run's CheckpointRun as the runs view holds it. A run the view lacks while it is not :attr:`ready
    <kresume.operator.views.View.ready>` (the operator has just started and its listing is not handled yet) is
    read from the API: a restart must never answer as if a run had nothing committed because its object was not
    listed yet. A failed read counts as no object (the store is asked anyway; this is only its fallback)."""
    obj = _first(runs, (namespace, run))
    if obj is not None or not isinstance(runs, views.View) or runs.ready:
        return obj
    try:
        return await state.api.run(namespace, run)
    except Exception as exc:  # noqa: BLE001 - the fallback is best effort
        logger.warning("reading CheckpointRun %s/%s failed: %s", namespace, run, exc)
        return None


def _skip(state: State, pod: dict[str, Any], namespace: str, run: str | None, reason: str, message: str,
          *, outcome: str = "skipped") -> Admission:
    state.notes.add(namespace, note_key(pod, run), [Note(reason, message)])
    return Admission(None, [message], outcome)


async def _admit(
    pod: dict[str, Any],
    namespace: str,
    state: State,
    *,
    policies: Mapping[Any, Any] | None,
    runs: Mapping[Any, Any] | None,
    deadline: float,
    dry_run: bool,
) -> Admission:
    ident = identity.run_identity(pod)
    if isinstance(ident, identity.IdentityError):
        return _skip(state, pod, namespace, None, ident.reason, ident.message + "; pod admitted without kresume")
    run = ident.run
    place = identity.ranks(pod, ident, await _owner_facts(state, namespace, ident))
    if isinstance(place, identity.IdentityError):
        return _skip(state, pod, namespace, run, place.reason, place.message)
    try:
        pname = decisions.policy_name(pod)
    except decisions.PolicyNameError as exc:
        return _skip(state, pod, namespace, run, "InvalidPolicy", str(exc))

    spec = _first(policies, (namespace, pname))
    if spec is None:
        obj = await state.api.policy(namespace, pname)
        spec = (obj or {}).get("spec") if obj else None
    if spec is None:
        return _skip(state, pod, namespace, run, "PolicyMissing",
                     f"no CheckpointPolicy {pname!r} in namespace {namespace!r}; create it (kubectl get "
                     f"{contract.POLICY_SHORT_NAME} -n {namespace}) or set annotation {contract.ANN_POLICY}; "
                     "pod admitted without kresume")
    try:
        policy = Policy.from_spec(spec)
        url = run_url(policy, namespace, run)
    except (ValidationError, RunNameError) as exc:
        reason = "InvalidRun" if isinstance(exc, RunNameError) else "InvalidPolicy"
        text = str(exc).replace("\n", " ")
        return _skip(state, pod, namespace, run, reason, f"{reason}: {text}; pod admitted without kresume")

    secret = None
    t_secret = time.monotonic()
    if policy.credentials_secret:
        secret = await state.api.secret(namespace, policy.credentials_secret)
    t_resolve = time.monotonic()
    options = credentials.storage_options(url, policy.storage_options, secret)

    fallback = status_fallback(await _run_object(state, runs, namespace, run))
    # The budget counts from the start of the handler (policy and Secret reads included), at least 50 ms.
    budget = max(0.05, min(deadline - time.monotonic(), policy.resolve_timeout_seconds))
    rank_env = None
    if place is not None and place.world_size > 1:  # every rank of one epoch gets the same checkpoint and token
        spec_of_run = decisions.run_spec(run=run, policy=pname, url=url, source=ident.source, group=ident.group,
                                         rank=None)
        admitted = await epochbook.admit(
            state.api, state.resolver, state.live, namespace=namespace, run=run, spec=spec_of_run, url=url,
            options=options, rank=place.rank, world_size=place.world_size, join_seconds=policy.epoch_join_seconds,
            budget=budget, fallback=fallback, dry_run=dry_run,
            pod_name=(pod.get("metadata") or {}).get("name") or None)
        outcome = admitted.outcome
        rank_env = RankEnv(place.rank, place.world_size, admitted.epoch.token)
    else:
        outcome = await state.resolver.resolve(url, options, budget=budget, fallback=fallback)
    t_inject = time.monotonic()

    try:
        result = inject(
            pod, policy, outcome.resume, run=run, namespace=namespace, native_sidecar=state.native,
            image=state.config.injection.sidecar_image, resolve_error=outcome.error, ranks=rank_env,
            default_resources=state.config.injection.sidecar_resources,
        )
    except InjectionError as exc:
        return _skip(state, pod, namespace, run, exc.reason, f"{exc}; pod admitted without kresume")
    broken = validity.introduced(pod, result.pod) if result.changed else []
    if broken:  # the API server would refuse the pod kresume made: never block its creation (issue 11 item 7)
        return _skip(state, pod, namespace, run, "InjectionWouldInvalidate",
                     "kresume's changes would make the API server refuse the pod: " + "; ".join(broken)
                     + "; pod admitted without kresume")
    if not dry_run and state.resolver.activity is not None:
        state.resolver.activity.admitted(url)  # the pod will run a sidecar: the run is busy until it ends

    logger.debug("inject-pod %s/%s: secret %.1f ms, resolve %.1f ms (%s), inject %.1f ms", namespace, run,
                 (t_resolve - t_secret) * 1000, (t_inject - t_resolve) * 1000, outcome.source,
                 (time.monotonic() - t_inject) * 1000)
    notes = [Note("EnvOverride", w) for w in result.warnings]
    warnings = list(result.warnings)
    if outcome.error:
        warnings.append(f"kresume: resume checkpoint from {outcome.source} ({outcome.error})")
    state.notes.add(namespace, note_key(pod, run), notes)
    if not result.changed:
        return Admission(None, warnings, "skipped", outcome.source, outcome.seconds)
    return Admission(result.pod, warnings, "injected", outcome.source, outcome.seconds)
