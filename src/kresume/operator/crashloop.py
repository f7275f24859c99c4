"""The crash-loop fallback rule, pure (issue 11 item 2; DESIGN.md invariant 2: "A checkpoint that fails to load
repeatedly is marked bad and skipped"). The shell is :mod:`kresume.operator.fallback`.

A checkpoint X is marked bad when ``failures`` attempts in a row (policy ``crashLoop.failures``, default 2) that
were injected X failed by themselves while X was still the run's newest valid checkpoint (no newer commit in
between: a trainer that loaded X and committed past it has shown X loads). An *attempt* is one start of the
trainer on X: a pod, or one trainer restart inside a pod (``restartPolicy: OnFailure``/``Always``), keyed
``<pod uid>/<restart count>``; the pods of one multi-rank resume epoch are one attempt, keyed by the epoch token
(one bad load fails every rank: restarts count, not pods).

What counts as *failed by itself* (:func:`failures`): a trainer container (``kresume.dev/containers``, default
every non-kresume container) or the ``kresume-restore`` init container terminated with a non-zero exit code, and

* the pod was not disrupted: no ``DisruptionTarget`` condition, no eviction/node-loss/shutdown reason, no
  ``deletionTimestamp`` (someone deleting a pod is a preemption, whatever exit follows);
* the exit is not a stop signal: 129 (SIGHUP), 130 (SIGINT), 137 (SIGKILL: a node crash, an OOM kill, the end of
  a grace period), 143 (SIGTERM);
* the termination reason is not one that says the container never ran its code or ran out of resources:
  ``OOMKilled``, ``StartError``, ``CreateContainerConfigError``, ``ContainerCannotRun``,
  ``ContainerStatusUnknown``, ``DeadlineExceeded`` — a fallback would not help those.

Limits (docs/operator.md): a trainer that crashes for a reason of its own right after loading, before its first
commit, looks the same as a checkpoint that does not load; ``crashLoop.maxFallbacks`` (default 1) bounds the
damage: after that many fallbacks without a newer commit, further crash loops are reported, not acted on.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kresume import contract
from kresume.operator import decisions

#: Exit codes that are stop signals (128 + signal number), never counted.
STOP_SIGNAL_EXIT_CODES = {129: "SIGHUP", 130: "SIGINT", 137: "SIGKILL", 143: "SIGTERM"}
#: Container termination reasons that are not the trainer's code failing on its input (kubelet reasons).
NOT_COUNTED_REASONS = frozenset({"OOMKilled", "StartError", "CreateContainerConfigError", "ContainerCannotRun",
                                 "ContainerStatusUnknown", "DeadlineExceeded"})
#: Decisions of :func:`next_status`.
IGNORE, COUNT, RESET, FALLBACK, HOLD = "ignore", "count", "reset", "fallback", "hold"


@dataclass(frozen=True)
class Failure:
    """One failed attempt: ``attempt`` key, pod name, container, exit code and termination reason."""

    attempt: str
    pod: str
    container: str
    exit_code: int
    reason: str


@dataclass(frozen=True)
class Decision:
    """What :func:`next_status` decided: ``action`` (:data:`IGNORE`, :data:`COUNT`, :data:`RESET`,
    :data:`FALLBACK` = mark the checkpoint bad now, :data:`HOLD` = threshold reached, fallbacks used up), the
    failures counted so far on the checkpoint, and the bad mark's ``reason`` text (for FALLBACK and HOLD)."""

    action: str
    count: int = 0
    reason: str = ""


def injected_checkpoint(pod: dict[str, Any], run_url: str) -> str | None:
    """The id of the checkpoint kresume injected into ``pod`` (its ``kresume.dev/resumed-from`` URL is
    ``<run_url>checkpoints/<id>/…``), or None: not injected, a fresh start, or a URL the user set themselves."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    url = str(ann.get(contract.ANN_RESUMED_FROM) or "")
    prefix = run_url.rstrip("/") + "/" + contract.CHECKPOINTS_DIR + "/"
    if contract.ANN_INJECTED not in ann or not url.startswith(prefix):
        return None
    checkpoint = url[len(prefix):].split("/", 1)[0]
    return checkpoint or None


def trainer_containers(pod: dict[str, Any]) -> tuple[str, ...]:
    """Containers whose failure counts: ``kresume.dev/containers`` (comma list), else every container but the
    sidecar; plus the restore init container (a checkpoint that cannot be restored fails there)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    own = {contract.SIDECAR_CONTAINER_NAME, contract.RESTORE_CONTAINER_NAME}
    names = [str(c.get("name")) for c in spec.get("containers") or [] if c.get("name") not in own]
    chosen = [n.strip() for n in str((meta.get("annotations") or {}).get(contract.ANN_CONTAINERS) or "").split(",")
              if n.strip() in names]
    return (*(chosen or names), contract.RESTORE_CONTAINER_NAME)


def counts(exit_code: Any, reason: Any) -> bool:
    """True when a terminated container's exit is a failure of its own (module rules)."""
    return (isinstance(exit_code, int) and exit_code != 0 and exit_code not in STOP_SIGNAL_EXIT_CODES
            and str(reason or "") not in NOT_COUNTED_REASONS)


def attempt_key(pod: dict[str, Any], restart: int) -> str:
    """``<epoch token>`` for a pod of a multi-rank resume epoch (``kresume.dev/epoch``), else ``<uid>/<restart>``."""
    meta = pod.get("metadata") or {}
    epoch = ((meta.get("annotations") or {}).get(contract.ANN_EPOCH) or "").strip()
    return f"epoch/{epoch}/{restart}" if epoch else f"{meta.get('uid') or meta.get('name') or ''}/{restart}"


def failures(pod: dict[str, Any]) -> list[Failure]:
    """The failed attempts ``pod`` shows now, one per attempt (oldest first); [] for a disrupted pod.

    A container's ``state.terminated`` is attempt ``restartCount``; its ``lastState.terminated`` (the trainer was
    restarted inside the pod) is attempt ``restartCount - 1``. Several trainers failing in one attempt count once.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if decisions.disruption(pod) or meta.get("deletionTimestamp"):
        return []
    wanted = set(trainer_containers(pod))
    found: dict[str, Failure] = {}
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        name = str(cs.get("name") or "")
        if name not in wanted:
            continue
        restarts = int(cs.get("restartCount") or 0)
        for which, restart in (("lastState", restarts - 1), ("state", restarts)):
            term = (cs.get(which) or {}).get("terminated") or {}
            if restart < 0 or not term or not counts(term.get("exitCode"), term.get("reason")):
                continue
            key = attempt_key(pod, restart)
            found.setdefault(key, Failure(key, str(meta.get("name") or ""), name, int(term["exitCode"]),
                                          str(term.get("reason") or "Error")))
    return sorted(found.values(), key=lambda f: f.attempt)


def next_status(status: dict[str, Any] | None, checkpoint: str, failure: Failure, *, newest: str | None,
                marked_bad: bool, threshold: int, max_fallbacks: int, when: str) -> tuple[dict[str, Any] | None,
                                                                                          Decision]:
    """The next ``CheckpointRun.status`` after ``failure`` of an attempt injected ``checkpoint``, and the decision.

    ``newest`` is the run's newest valid checkpoint now (the store's ``latest``, None when it has none);
    ``marked_bad``: ``checkpoint`` carries a bad mark already. Rules, in order:

    1. ``threshold`` 0 (off), a bad-marked checkpoint, or an attempt already counted: IGNORE (status None).
    2. ``newest`` is another checkpoint: a newer commit exists, so the attempt got past loading (or the
       checkpoint is gone): RESET the streak and the fallbacks (progress was made).
    3. Otherwise COUNT it in ``status.crashLoop`` (a streak on another checkpoint starts over; it keeps
       ``fallbacks`` only when that checkpoint is ``lastFallback.next``, where the last fallback went). At
       ``threshold`` failures: FALLBACK (``fallbacks`` + 1) when fewer than ``max_fallbacks`` were made in a row,
       else HOLD (once: ``crashLoop.held``; the shell reports it).
    """
    if threshold <= 0 or marked_bad:
        return None, Decision(IGNORE)
    status = copy.deepcopy(status or {})
    loop = dict(status.get("crashLoop") or {})
    if newest != checkpoint:
        if not loop.get("failures") and not loop.get("fallbacks"):
            return None, Decision(IGNORE)
        status["crashLoop"] = {"fallbacks": 0}
        return status, Decision(RESET)
    if loop.get("checkpoint") != checkpoint:
        # A streak on another checkpoint starts over; the fallbacks in a row carry over only onto the checkpoint
        # the last fallback went to (any other one was committed since: progress).
        went_to = (status.get("lastFallback") or {}).get("next")
        loop = {"checkpoint": checkpoint, "failures": [],
                "fallbacks": int(loop.get("fallbacks") or 0) if went_to == checkpoint else 0}
    seen: list[dict[str, Any]] = list(loop.get("failures") or [])
    if any(f.get("attempt") == failure.attempt for f in seen) or loop.get("held"):
        return None, Decision(IGNORE, len(seen))
    seen.append({"attempt": failure.attempt, "pod": failure.pod, "container": failure.container,
                 "exitCode": failure.exit_code, "reason": failure.reason, "time": when})
    loop["failures"] = seen[-max(threshold, 1):]
    status["crashLoop"] = loop
    if len(seen) < threshold:
        return status, Decision(COUNT, len(seen))
    reason = describe(checkpoint, seen[-threshold:])
    if int(loop.get("fallbacks") or 0) < max_fallbacks:
        loop["fallbacks"] = int(loop.get("fallbacks") or 0) + 1
        loop["failures"] = []
        status["lastFallback"] = {"checkpoint": checkpoint, "reason": reason, "time": when}
        return status, Decision(FALLBACK, len(seen), reason)
    loop["held"] = True
    return status, Decision(HOLD, len(seen), reason)


def describe(checkpoint: str, failed: Iterable[dict[str, Any]]) -> str:
    """The bad mark's reason: which attempts failed, how (one line)."""
    items = list(failed)
    how = "; ".join(f"pod {f.get('pod')} container {f.get('container')} exit code {f.get('exitCode')} "
                    f"({f.get('reason')})" for f in items)
    return (f"kresume operator: {len(items)} attempts in a row failed after resuming from {checkpoint}, with no "
            f"newer commit: {how}")


def record_next(status: dict[str, Any] | None, checkpoint: str, nxt: str | None) -> dict[str, Any] | None:
    """The status once ``checkpoint`` is marked bad: ``lastFallback.next`` = the checkpoint the next pods resume
    from (None: none, a fresh start); None when ``lastFallback`` is about another checkpoint."""
    status = copy.deepcopy(status or {})
    last = dict(status.get("lastFallback") or {})
    if last.get("checkpoint") != checkpoint:
        return None
    last["marked"] = True
    if nxt is None:
        last.pop("next", None)
    else:
        last["next"] = nxt
    status["lastFallback"] = last
    return status


def undo_fallback(status: dict[str, Any] | None, checkpoint: str) -> dict[str, Any] | None:
    """The status after marking ``checkpoint`` bad failed: the claim is withdrawn (``fallbacks`` - 1, no
    ``lastFallback``), so the next failures on it decide again. None when there is no such claim."""
    status = copy.deepcopy(status or {})
    last = status.get("lastFallback") or {}
    loop = dict(status.get("crashLoop") or {})
    if last.get("checkpoint") != checkpoint or last.get("marked"):
        return None
    status.pop("lastFallback", None)
    loop["fallbacks"] = max(0, int(loop.get("fallbacks") or 0) - 1)
    status["crashLoop"] = loop
    return status
