"""When a legacy-mode sidecar leaves on its own: the trainer is gone for good (pure decisions, no I/O).

On a Kubernetes before 1.29 the webhook appends ``kresume-sidecar`` to the pod's ``containers`` (legacy mode):
the kubelet never stops it, so a pod whose trainer ended would stay ``Running`` for ever — a finished Job never
completes, and a crashed trainer under ``restartPolicy: Never`` is never counted against ``backoffLimit``
(Kubernetes docs "Pod Lifecycle": a pod is Succeeded/Failed only once *all* its containers terminated). The
webhook passes the pod's ``restartPolicy`` to a legacy sidecar (``KRESUME_RESTART_POLICY``; unset in native mode,
where the kubelet stops the sidecar after the trainer) and the sidecar leaves — commits what is complete, then
exits 0 — when the kubelet will never run the trainer again:

- ``Never``: the trainer is gone: its lock (:data:`kresume.contract.TRAINER_LOCK`, held for the trainer process's
  life by ``resume_from()`` and the preemption hooks) was seen held, and has been free for ``settle_seconds``;
  however the trainer ended (0, a crash, OOM-kill), it will not restart.
- ``OnFailure``: the same, and the trainer's notice says ``finished`` (``kresume.training_finished()``, written by
  the Lightning/HF hooks at the end of a normal fit): the kubelet restarts a trainer that failed in place, and that
  one needs its sidecar; one that exited 0 after finishing is done.
- ``Always``, or unset: never: the kubelet restarts the trainer whatever its exit (or the mode is native).

A lock that is free while the notice says ``saving`` means the trainer died in the middle of its save (no process
holds the lock: nobody will finish that checkpoint); what is complete is still committed. While the lock is held
the trainer runs (it may be writing its final save) and the sidecar stays. A trainer that never takes the lock
(no ``resume_from()``, no hook) leaves the sidecar running until SIGTERM, as before (docs/preemption.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from kresume.sidecar.presence import Trainer

RESTART_POLICIES = ("Never", "OnFailure", "Always")
"""core/v1 ``PodSpec.restartPolicy`` values (its default is ``Always``)."""

FINISHED = "finished"
"""Notice ``state`` of a trainer whose training ended normally (:func:`kresume.training_finished`)."""


@dataclass
class TrainerWatch:
    """What the sidecar has seen of the trainer's lock so far (fed by :meth:`observe`; times are seconds).

    ``started_wall``: the sidecar's start, epoch seconds; a notice written after it proves a trainer of this pod
    ran even when its whole life fell between two probes (a trainer that ends within a second), and so does a
    lock whose holder record carries this pod's uid (the trainer container starts before a legacy sidecar, and
    a short trainer may end before the sidecar's first probe). A lock file without either may be an earlier
    pod's (a persistent volume): it proves nothing.
    """

    started_wall: float
    pod_uid: str = ""
    """This pod's ``metadata.uid`` (``KRESUME_POD_UID``); a free lock whose holder record names it was this pod's."""
    seen_held: bool = False
    free_since: float | None = None
    """Monotonic seconds since which the lock has been seen free without a break (None: held, or never seen)."""
    last: Trainer | None = None

    def observe(self, trainer: Trainer, *, now: float) -> None:
        """Record one :func:`kresume.sidecar.presence.probe` taken at monotonic time ``now``."""
        self.last = trainer
        written = (trainer.notice or {}).get("written_at")
        if trainer.alive:
            self.seen_held, self.free_since = True, None
            return
        if isinstance(written, int | float) and written >= self.started_wall:
            self.seen_held = True
        if self.pod_uid and trainer.alive is False and (trainer.holder or {}).get("pod_uid") == self.pod_uid:
            self.seen_held = True  # this pod's trainer held it, and ended before the sidecar's first probe
        if trainer.alive is False:
            self.free_since = now if self.free_since is None else self.free_since
        else:
            self.free_since = None  # no lock file (or locks unsupported): nothing known

    def free_for(self, now: float) -> float:
        """Seconds the lock has been free without a break (0 while held or unknown)."""
        return 0.0 if self.free_since is None else max(0.0, now - self.free_since)


def leaves(restart_policy: str, watch: TrainerWatch, *, now: float, settle_seconds: float) -> str | None:
    """Why the sidecar should leave now (a sentence for its log), or None to keep running.

    ``restart_policy``: the pod's (``KRESUME_RESTART_POLICY``; ``""`` = not given: never leave). ``settle_seconds``:
    how long the lock must have been free without a break (a trainer container's several processes may take and
    drop it at different times). The rule and its source: the module docstring.
    """
    if restart_policy not in ("Never", "OnFailure") or not watch.seen_held or watch.last is None:
        return None
    if watch.last.alive is not False or watch.free_for(now) < settle_seconds:
        return None
    state = (watch.last.notice or {}).get("state")
    if restart_policy == "OnFailure":
        if state != FINISHED:
            return None
        return "the trainer finished (notice 'finished') and exited; restartPolicy OnFailure will not restart it"
    how = {FINISHED: "finished", "saving": "died during its final save", "saved": "saved on SIGTERM",
           "none": "was preempted", "failed": "failed its final save"}.get(str(state), "ended")
    return f"the trainer {how} and exited; restartPolicy Never will not restart it"
