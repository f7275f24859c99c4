"""Save on SIGTERM: the training side of a graceful preemption, for plain PyTorch loops and the hooks.

Kubernetes preempts a pod by sending SIGTERM to every container's main process, waiting the pod's
``terminationGracePeriodSeconds``, then SIGKILL (Kubernetes docs, "Pod Lifecycle: Termination of Pods").
A trainer that saves within that time and exits loses no step; the sidecar commits the save before
its own deadline (sidecar/README.md, "Signals and exit"). Three pieces, shared by
:mod:`kresume.lightning`, :mod:`kresume.hf` and :func:`on_preemption`:

- :class:`Latch` — a SIGTERM handler that only records the signal (time, number). Saving inside a
  signal handler is unsafe (the optimizer may be half-way through a step), so the training loop
  checks the latch at a step boundary and saves there.
- :class:`Presence` — the trainer's half of the handshake with the sidecar in the checkpoint folder:
  a shared ``flock(2)`` on :data:`kresume.contract.TRAINER_LOCK` held for the process's whole life
  (the kernel releases it however the process ends, SIGKILL included), and the notice
  :data:`kresume.contract.TRAINER_NOTICE` (``signal_at``, ``state``, ``checkpoint``) written on SIGTERM.
  The sidecar keeps committing while some trainer holds the lock and its grace period lasts; in
  native-sidecar mode it learns from ``signal_at`` when the pod's grace period began.
- :class:`Preemption` — ``check()`` at a step boundary: after SIGTERM, call ``save()``, then exit
  with :data:`kresume.contract.PREEMPTED_EXIT_CODE` (143 = 128 + SIGTERM). Never 0: a Job counts a pod
  whose containers all exited 0 as Succeeded, and would end a half-trained run.

Usage (plain PyTorch)::

    preemption = kresume.on_preemption(lambda: torch.save(state(), f"{ckpt_dir}/step-{step}.pt"))
    for step in range(start, total):
        train_step()
        preemption.check(step)  # after SIGTERM: save, then exit 143
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from kresume import contract

log = logging.getLogger("kresume.preemption")

NOTICE_STATES = ("saving", "saved", "failed", "none", "finished")
"""``state`` of the notice: ``saving`` (signal received, the save is due or under way), ``saved`` (the final
checkpoint is written: ``checkpoint`` names it), ``failed`` (the save raised), ``none`` (nothing to add: the
newest checkpoint already holds this step), ``finished`` (training ended normally: :func:`training_finished`)."""

_IMPORTED_AT = time.time()
"""When this process imported kresume (epoch seconds): a notice written before it is an earlier process's."""
_held: dict[str, int] = {}
_held_lock = threading.Lock()


def checkpoint_dir(folder: str | os.PathLike[str] | None = None) -> Path | None:
    """``folder``, else ``KRESUME_CHECKPOINT_DIR`` (injected by the operator), else ``None``."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get(contract.ENV_CHECKPOINT_DIR)
    return Path(env) if env else None


class Latch:
    """Records SIGTERM (or ``signals``) without acting on it; the handler chains to a callable handler that
    was installed before (Lightning's own, for example), never to the default action (which would end the
    process before the save).

    ``requested`` is True after the first signal; ``signal_at`` is its time (epoch seconds), ``signum`` its
    number. Install from the main thread (Python's rule for ``signal.signal``); elsewhere it stays inert.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)) -> None:
        self.signals = tuple(signals)
        self.signal_at: float | None = None
        self.signum: int | None = None
        self.on_signal: Callable[[int], None] | None = None
        """Called (in the handler) once, at the first signal."""
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a signal arrived."""
        return self.signal_at is not None

    def install(self) -> bool:
        """Install the handlers; False (nothing installed) off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("kresume: preemption hook set up off the main thread; SIGTERM is not caught")
            return False
        for sig in self.signals:
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        """Put the previous handlers back (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in self._previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal_at is None
        if first:
            self.signal_at, self.signum = time.time(), signum
        prev = self._previous.get(signum)
        if callable(prev) and prev is not self._handle:
            prev(signum, frame)
        if first and self.on_signal is not None:
            self.on_signal(signum)


def hold_for_life(folder: str | os.PathLike[str] | None = None) -> bool:
    """Take the trainer's shared lock in ``folder`` (default ``KRESUME_CHECKPOINT_DIR``) for the rest of this
    process's life; idempotent. Called by :func:`kresume.resume_from` and the preemption hooks, so the sidecar
    sees the trainer alive until the process ends (a legacy-mode sidecar leaves once it is gone for good:
    :mod:`kresume.sidecar.leaving`), including the work a script does after ``fit`` returns. The kernel drops
    the lock when the process ends, however it ends (processes forked from it share it until they end too;
    an ``exec``'d program does not inherit it). The first hold in a process removes a notice an earlier process
    left (a restarted container). Returns False, with a warning, when the folder cannot be used, or without a
    folder."""
    path = checkpoint_dir(folder)
    if path is None:
        return False
    key = os.path.realpath(path)
    with _held_lock:
        if key in _held:
            return True
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / contract.TRAINER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            log.warning("kresume: cannot create %s in %s (%s); the sidecar cannot tell when the trainer exits",
                        contract.TRAINER_LOCK, path, exc.strerror or exc)
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)  # blocks only for the microseconds a sidecar's probe holds it
        _held[key] = fd
        record = json.dumps({"pod_uid": os.environ.get(contract.ENV_POD_UID, ""), "pid": os.getpid(),
                             "started_at": time.time()}, sort_keys=True).encode()
        with contextlib.suppress(OSError):  # who holds it: the sidecar matches the pod uid (kresume.sidecar.leaving)
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        notice = path / contract.TRAINER_NOTICE
        with contextlib.suppress(OSError, ValueError):
            written = json.loads(notice.read_text()).get("written_at")
            if not isinstance(written, int | float) or written < _IMPORTED_AT:
                notice.unlink()
    return True


def training_finished(folder: str | os.PathLike[str] | None = None, *, step: int | None = None) -> bool:
    """Tell the sidecar that training ended normally: the notice's ``state`` becomes ``finished`` (with ``step``
    and ``finished_at``), and this process keeps the trainer lock until it ends (:func:`hold_for_life`).

    Call it once the last checkpoint is written, e.g. after the training loop; the Lightning and HF hooks call
    it at the end of a fit that was not preempted. Under ``restartPolicy: OnFailure`` in legacy mode it is what
    lets the sidecar leave once the trainer exits (a trainer that exits without it is taken for a crash the
    kubelet restarts in place); under ``Never`` the sidecar leaves when the trainer exits either way.
    ``folder``: default ``KRESUME_CHECKPOINT_DIR``; returns False (nothing written) without one.
    """
    if not hold_for_life(folder):
        return False
    path = checkpoint_dir(folder)
    assert path is not None
    now = time.time()
    fields = {"state": "finished", "step": step, "finished_at": now, "pid": os.getpid(), "written_at": now}
    final = path / contract.TRAINER_NOTICE
    tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(fields, sort_keys=True))
        os.replace(tmp, final)
    except OSError as exc:
        log.warning("kresume: cannot write %s: %s", final, exc.strerror or exc)
        return False
    return True


class Presence:
    """The trainer's lock and notice in ``folder`` (see the module docstring).

    ``folder`` None: ``KRESUME_CHECKPOINT_DIR``; without either the presence is inactive (every method is a
    no-op), so a trainer runs the same outside Kubernetes.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = checkpoint_dir(folder)
        self._fd: int | None = None
        self.notice_fields: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        """True while the lock is held."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the shared lock (creating the folder and the lock file) and remove a notice left by an earlier
        process in this folder (a restarted container). Returns False, with a warning, when the folder cannot
        be used: the trainer still runs, only the sidecar cannot wait for its final save."""
        if self._fd is not None or self.folder is None:
            return self._fd is not None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / contract.TRAINER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            log.warning("kresume: cannot create %s in %s (%s); the sidecar will not wait for the final save",
                        contract.TRAINER_LOCK, self.folder, exc.strerror or exc)
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)  # blocks only for the microseconds a sidecar's probe holds it
        self._fd = fd
        with contextlib.suppress(FileNotFoundError):
            (self.folder / contract.TRAINER_NOTICE).unlink()
        return True

    def notice(self, state: str, **fields: Any) -> None:
        """Write the notice atomically (temp file + ``rename(2)``): ``state`` (one of :data:`NOTICE_STATES`)
        plus ``fields`` merged into what earlier calls wrote (``signal_at``, ``step``, ``checkpoint``…)."""
        if self._fd is None or self.folder is None:
            return
        self.notice_fields.update(fields, state=state, pid=os.getpid(), written_at=time.time())
        final = self.folder / contract.TRAINER_NOTICE
        tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.notice_fields, sort_keys=True))
            os.replace(tmp, final)
        except OSError as exc:
            log.warning("kresume: cannot write %s: %s", final, exc.strerror or exc)

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process ends)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Preemption:
    """What :func:`on_preemption` returns: a latch, a presence and the ``save`` to call at a step boundary.

    ``exit_code`` None: :meth:`check` returns True after saving instead of exiting (the loop must then stop
    by itself; exit non-zero, or the Job may count the pod as Succeeded).

    ``fast_exit``: after a final save, once the ``atexit`` handlers registered after :meth:`start` have run,
    end the process with ``os._exit`` instead of the interpreter's teardown (2.5-7 s for torch + Lightning on
    this 2-core machine; the pod is not done, and its replacement not created, until the trainer has exited).
    It skips ``atexit`` handlers registered before :meth:`start` (logging is shut down and stdout/stderr are
    flushed first): leave it off when such a handler must run (a logger's final upload).
    """

    def __init__(self, save: Callable[[], Any], *, folder: str | os.PathLike[str] | None = None,
                 exit_code: int | None = contract.PREEMPTED_EXIT_CODE,
                 signals: Iterable[int] = (signal.SIGTERM,), fast_exit: bool = False) -> None:
        self.save = save
        self.exit_code = exit_code
        self.fast_exit = fast_exit
        self.latch = Latch(signals)
        self.presence = Presence(folder)
        self.latch.on_signal = self._signalled
        self.saved = False
        self.result: dict[str, Any] = {}
        """After the save: ``signal_at``, ``saved_at``, ``save_seconds``, ``checkpoint`` (what ``save``
        returned, as a string, when it returned something)."""

    def start(self) -> Preemption:
        """Take the presence lock (and the process's lifelong one: :func:`hold_for_life`) and install the SIGTERM
        latch; returns self."""
        self.presence.acquire()
        hold_for_life(self.presence.folder)
        self.latch.install()
        if self.fast_exit:
            atexit.register(self._exit_fast)  # early: it runs after the handlers registered later (LIFO)
        return self

    def _exit_fast(self) -> None:
        if not self.saved or self.exit_code is None:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(self.exit_code)

    def close(self) -> None:
        """Restore the previous handlers and drop the lock."""
        self.latch.restore()
        self.presence.release()

    def __enter__(self) -> Preemption:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def requested(self) -> bool:
        """True after SIGTERM: stop at the next step boundary."""
        return self.latch.requested

    def _signalled(self, signum: int) -> None:
        self.presence.notice("saving", signal_at=self.latch.signal_at, signal=signum)

    def check(self, step: int | None = None) -> bool:
        """Call at a step boundary (``step``: the steps done, recorded in the notice and the log). Before
        SIGTERM: returns False at once. After it: calls ``save()`` once, records the notice, logs one line,
        then exits with ``exit_code`` (raises ``SystemExit``), or returns True when ``exit_code`` is None. A
        save that raises is recorded as ``failed`` and re-raised."""
        if not self.latch.requested:
            return False
        if not self.saved:
            self.run_save(self.save, step=step)
        if self.exit_code is None:
            return True
        raise SystemExit(self.exit_code)

    def run_save(self, save: Callable[[], Any], *, step: int | None = None) -> Any:
        """Run ``save`` now as the final save (used by the Lightning and HF hooks too): notice ``saving`` →
        ``saved`` (or ``failed``), timing, one log line. Returns what ``save`` returned."""
        t0 = time.time()
        self.presence.notice("saving", signal_at=self.latch.signal_at, step=step)
        try:
            out = save()
        except BaseException as exc:
            self.presence.notice("failed", error=f"{type(exc).__name__}: {exc}")
            log.error("kresume: the final save after SIGTERM failed: %s", exc)
            raise
        self.mark_saved(None if out is None else str(out), step=step, started=t0)
        return out

    def mark_saved(self, checkpoint: str | None, *, step: int | None, started: float,
                   state: str = "saved") -> None:
        """Record that the final save is done (``state`` ``saved``, or ``none`` when nothing new had to be
        written), fill :attr:`result` and log it."""
        now = time.time()
        self.saved = True
        self.result = {"signal_at": self.latch.signal_at, "saved_at": now, "save_seconds": round(now - started, 3),
                       "checkpoint": checkpoint, "step": step, "state": state}  # fmt: skip
        self.presence.notice(state, saved_at=now, checkpoint=checkpoint, step=step)
        after = f"{now - self.latch.signal_at:.2f} s after SIGTERM" if self.latch.signal_at else "no signal"
        what = f"saved {checkpoint}" if state == "saved" else "nothing new to save (newest checkpoint holds it)"
        log.warning("kresume: preemption: %s at step %s, %s; %s", what, step, after,
                    "exiting" if self.exit_code is None else f"exiting with {self.exit_code}")
        sys.stderr.flush()


def on_preemption(save: Callable[[], Any], *, checkpoint_dir: str | os.PathLike[str] | None = None,
                  exit_code: int | None = contract.PREEMPTED_EXIT_CODE,
                  signals: Iterable[int] = (signal.SIGTERM,), fast_exit: bool = False) -> Preemption:
    """Save on SIGTERM in a plain training loop; returns a started :class:`Preemption` — call its
    ``check(step)`` after every step.

    Parameters
    ----------
    save : callable
        Writes the checkpoint into the watched folder (``KRESUME_CHECKPOINT_DIR``) with the step in its name
        (``step-1200.pt``); its return value (a path) is logged. Write it whole before returning: the sidecar
        judges completeness from content (a ``torch.save`` zip is complete when its end record is written).
    checkpoint_dir : path, optional
        The watched folder (default ``KRESUME_CHECKPOINT_DIR``) where the presence lock and notice live;
        without one the hook still saves and exits, but the sidecar cannot wait for the save.
    exit_code : int or None
        Exit status after the save (default 143 = 128 + SIGTERM). None: ``check()`` returns True instead.
    signals : iterable of int
        Signals that request the save (default SIGTERM only).
    fast_exit : bool
        Skip the interpreter's teardown after the final save (see :class:`Preemption`).
    """
    return Preemption(save, folder=checkpoint_dir, exit_code=exit_code, signals=signals, fast_exit=fast_exit).start()
