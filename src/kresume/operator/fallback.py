"""The crash-loop fallback, the shell around :mod:`kresume.operator.crashloop` (issue 11 item 2).

Fed by the pod watch (``pod-events``): for an injected pod that shows a failed attempt (:func:`crashloop.failures`)
it reads the run's newest valid checkpoint and the bad mark of the injected one from the store, records the
failure in ``CheckpointRun.status.crashLoop`` (a read-modify-write: of two events racing, one claims the
fallback) and, at the policy's threshold, marks the checkpoint bad in the store (``bad/<id>.json``, the record
``kresume mark-bad`` writes, with the reason) so the next pod resumes from the one before. A Warning Event on the
pod and on the ``CheckpointRun`` says so; ``kresume_fallbacks_total`` counts it. Every store call runs in the
resolver's threads within ``--refresh-interval``'s budget (``refresh_timeout``) and never on the admission path.

Needs write access to the run's prefix with the policy's credentials (the sidecar's, which write there anyway).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import kopf

from kresume import identity
from kresume.operator import admission, credentials, crashloop, decisions, metrics, podevents, statuswriter
from kresume.policy import Policy

logger = logging.getLogger(__name__)


class Done:
    """Bounded set of ``(run url, attempt)`` already decided in this process (pod watch events repeat)."""

    def __init__(self, limit: int = 20000) -> None:
        self._items: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._limit = limit

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._items

    def add(self, key: tuple[str, str]) -> None:
        self._items[key] = None
        while len(self._items) > self._limit:
            self._items.popitem(last=False)


DONE = Done()


async def observe(pod: dict[str, Any], state: admission.State, run: identity.RunIdentity,
                  policies: Mapping[Any, Any] | None, body: Any = None) -> None:
    """Count the failed attempts ``pod`` shows toward the crash-loop fallback of its run; fall back at the
    threshold. Errors are logged, never raised (the next event of the pod tries again)."""
    url = podevents.pod_run_url(pod)
    checkpoint = crashloop.injected_checkpoint(pod, url) if url else None
    if url is None or checkpoint is None:
        return
    fresh = [f for f in crashloop.failures(pod) if (url, f.attempt) not in DONE]
    if not fresh:
        return
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "")
    try:
        policy, options = await _policy(pod, ns, url, state, policies)
        if policy is None or policy.crash_loop.failures <= 0:
            for f in fresh:
                DONE.add((url, f.attempt))
            return

        def read(store: Any) -> tuple[str | None, bool]:
            newest = store.latest()
            return (newest.checkpoint_id if newest is not None else None), store.is_bad(checkpoint)

        newest, marked = await state.resolver.call(url, options, read)
        for failure in fresh:
            await _decide(pod, body, state, run, url, options, policy, checkpoint, failure, newest, marked)
            DONE.add((url, failure.attempt))
    except Exception as exc:  # noqa: BLE001 - best effort; the next pod event retries
        logger.warning("pod %s/%s: crash-loop bookkeeping failed: %s", ns, meta.get("name"), exc)


async def _policy(pod: dict[str, Any], ns: str, url: str, state: admission.State,
                  policies: Mapping[Any, Any] | None) -> tuple[Policy | None, dict[str, Any]]:
    try:
        pname = decisions.policy_name(pod)
    except decisions.PolicyNameError:
        return None, {}
    spec = admission._first(policies, (ns, pname))
    if spec is None:
        spec = ((await state.api.policy(ns, pname)) or {}).get("spec")
    if spec is None:
        return None, {}
    policy = Policy.from_spec(spec)
    secret = await state.api.secret(ns, policy.credentials_secret) if policy.credentials_secret else None
    return policy, credentials.storage_options(url, policy.storage_options, secret)


async def _decide(pod: dict[str, Any], body: Any, state: admission.State, run: identity.RunIdentity, url: str,
                  options: dict[str, Any], policy: Policy, checkpoint: str, failure: crashloop.Failure,
                  newest: str | None, marked: bool) -> None:
    ns = str((pod.get("metadata") or {}).get("namespace") or "")
    when = decisions.now_iso()
    made: list[crashloop.Decision] = [crashloop.Decision(crashloop.IGNORE)]

    def change(status: dict[str, Any] | None) -> dict[str, Any] | None:
        new, decision = crashloop.next_status(
            status, checkpoint, failure, newest=newest, marked_bad=marked, threshold=policy.crash_loop.failures,
            max_fallbacks=policy.crash_loop.max_fallbacks, when=when)
        made[0] = decision  # the last call is the one whose write succeeded (conflicts call it again)
        return new

    run_obj = await statuswriter.update(state, ns, run.run, change)
    decision = made[0] if run_obj is not None else crashloop.Decision(crashloop.IGNORE)
    who = f"run {run.run}: pod {failure.pod} ({failure.container} exit code {failure.exit_code}, {failure.reason})"
    if decision.action == crashloop.COUNT:
        metrics.CRASHLOOP_FAILURES.inc()
        _event(body, "Warning", "CheckpointFailureCounted",
               f"{who} failed after resuming from {checkpoint}: {decision.count} of {policy.crash_loop.failures} "
               "failures in a row before kresume marks it bad")
    elif decision.action == crashloop.HOLD:
        metrics.CRASHLOOP_FAILURES.inc()
        text = (f"{who}: {decision.count} attempts in a row failed on {checkpoint}, but "
                f"{policy.crash_loop.max_fallbacks} fallback(s) in a row were made already without a newer commit; "
                "nothing marked (the failure is likely not the checkpoint's: look at the trainer's log)")
        _event(body, "Warning", "CrashLoopNotFallingBack", text)
        _event(run_obj, "Warning", "CrashLoopNotFallingBack", text)
    elif decision.action == crashloop.FALLBACK:
        metrics.CRASHLOOP_FAILURES.inc()
        await _fall_back(body, run_obj, state, run, url, options, checkpoint, decision)


async def _fall_back(body: Any, run_obj: dict[str, Any] | None, state: admission.State, run: identity.RunIdentity,
                     url: str, options: dict[str, Any], checkpoint: str, decision: crashloop.Decision) -> None:
    ns = str(((run_obj or {}).get("metadata") or {}).get("namespace") or "")
    try:
        await state.resolver.call(url, options, lambda store: store.mark_bad(checkpoint, decision.reason))
    except Exception as exc:  # noqa: BLE001 - undo the claim so the next failures try again
        await statuswriter.update(state, ns, run.run, lambda s: crashloop.undo_fallback(s, checkpoint))
        text = f"run {run.run}: marking {checkpoint} bad after a crash loop failed ({exc}); will retry"
        logger.warning(text)
        _event(body, "Warning", "CheckpointFallbackFailed", text)
        return
    state.resolver.note_bad(url, checkpoint)
    metrics.FALLBACKS.inc()
    nxt = None
    try:
        nxt = (await state.resolver.refresh(url, options)).resume  # also leaves the next answer in the cache
    except Exception as exc:  # noqa: BLE001 - the next admission asks the store itself
        logger.warning("run %s/%s: reading the store after the fallback failed: %s", ns, run.run, exc)
    where = f"{nxt.url} (step {nxt.step})" if nxt is not None else "nothing: the next pod starts fresh"
    text = (f"run {run.run}: {decision.reason}; marked it bad (to undo, delete {url}bad/{checkpoint}.json); next "
            f"pods resume from {where}")
    logger.warning(text)
    written = await statuswriter.update(state, ns, run.run, lambda s: crashloop.record_next(
        s, checkpoint, nxt.checkpoint if nxt is not None else None))
    _event(body, "Warning", "CheckpointMarkedBad", text)
    _event(written or run_obj, "Warning", "CheckpointMarkedBad", text)


def _event(obj: Any, kind: str, reason: str, message: str) -> None:
    """A kopf Event on ``obj`` (a pod body or a CheckpointRun object); nothing when there is no object."""
    if obj:
        kopf.event(obj, type=kind, reason=reason, message=message[:1000])
