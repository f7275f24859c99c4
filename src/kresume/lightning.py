"""Lightning: save on SIGTERM with one callback, ``trainer = L.Trainer(callbacks=[PreemptionCheckpoint()])``.

How it works with Lightning 2.x's own SIGTERM handling (``lightning.pytorch.trainer.connectors.
signal_connector``): during ``fit`` Lightning records SIGTERM and, at the end of the running batch (after its
``on_train_batch_end`` hooks, so a ``ModelCheckpoint`` due at that step has saved), raises
``SIGTERMException`` (a ``SystemExit``) through the callbacks' ``on_exception``. This callback saves there
with ``trainer.save_checkpoint`` (what Lightning's ``OnExceptionCheckpoint`` does) into the watched folder,
unless a ``ModelCheckpoint`` already saved this very step, and sets the exit status to 143 instead of the
exception's 0 (a Job counts a pod whose containers all exited 0 as Succeeded). A SIGTERM that arrives before
``fit`` registered Lightning's handler (while a checkpoint is being restored) is caught by this callback's
latch from ``setup`` on and honoured after the first batch.

The resumed run continues at the saved ``global_step`` (mid-epoch checkpoints are what ``OnExceptionCheckpoint``
writes; Lightning resumes them). Requires the ``lightning`` package (``pip install kresume[torch]``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from kresume import contract
from kresume.preemption import Preemption, training_finished


class PreemptionCheckpoint(Callback):
    """Finish the current step on SIGTERM, save a checkpoint into the watched folder, exit 143.

    Parameters
    ----------
    dirpath : str, optional
        Where to save: default ``KRESUME_CHECKPOINT_DIR``, else the first ``ModelCheckpoint``'s ``dirpath``, else
        the trainer's ``default_root_dir``. It must be the folder the kresume sidecar watches.
    filename : str
        File name pattern, formatted with ``epoch`` and ``step`` (the step in the name lets the sidecar and
        ``kresume ls`` show it).
    exit_code : int or None
        Exit status after the save (default 143 = 128 + SIGTERM); None keeps Lightning's (0).
    report : callable, optional
        Called with the result dict (``signal_at``, ``saved_at``, ``save_seconds``, ``checkpoint``, ``step``,
        ``state``) after the save, e.g. to print it in the trainer's log.
    fast_exit : bool
        After the final save, skip the interpreter's teardown (``os._exit`` once the ``atexit`` handlers
        registered after ``fit`` began have run; 2.5-7 s saved per restart here): see
        :class:`kresume.preemption.Preemption`. Off by default.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "preempted-epoch={epoch}-step={step}.ckpt",
                 exit_code: int | None = contract.PREEMPTED_EXIT_CODE,
                 report: Callable[[dict[str, Any]], None] | None = None, fast_exit: bool = False) -> None:
        self.fast_exit = fast_exit
        self.dirpath = dirpath
        self.filename = filename
        self.exit_code = exit_code
        self.report = report
        self.preemption: Preemption | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------
    def _folder(self, trainer: pl.Trainer) -> str:
        if self.dirpath:
            return self.dirpath
        env = os.environ.get(contract.ENV_CHECKPOINT_DIR)
        if env:
            return env
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                return str(cb.dirpath)
        return str(trainer.default_root_dir)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:  # noqa: D102
        if stage != "fit" or self.preemption is not None:
            return
        self.preemption = Preemption(lambda: None, folder=self._folder(trainer), exit_code=self.exit_code,
                                     fast_exit=self.fast_exit)
        self.preemption.start()  # every process of the pod takes the (shared) lock

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        # A fit that ran to its end (max_steps/max_epochs, early stopping), not one stopped by SIGTERM: the notice
        # says "finished" (a legacy-mode sidecar under restartPolicy OnFailure may leave once the process exits).
        p = self.preemption
        if p is not None and not p.requested and not trainer.interrupted:
            training_finished(p.presence.folder, step=trainer.global_step)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:  # noqa: D102
        if stage == "fit" and self.preemption is not None and not self.preemption.requested:
            self.preemption.close()
            self.preemption = None

    # --- the save -------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # noqa: D102
        # A SIGTERM caught before Lightning registered its own handler (checkpoint restore): stop now.
        p = self.preemption
        if p is not None and p.requested and not trainer.received_sigterm:
            raise SIGTERMException()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:  # noqa: D102
        p = self.preemption
        if p is None or not isinstance(exception, SIGTERMException) or p.saved:
            return
        step, started = trainer.global_step, time.time()
        already = _saved_at_step(trainer, step)
        if already is not None:
            p.mark_saved(os.path.basename(already), step=step, started=started, state="none")
        else:
            name = self.filename.format(epoch=trainer.current_epoch, step=step)
            p.run_save(lambda: _save_whole(trainer, self._folder(trainer), name), step=step)
        if self.exit_code is not None:
            exception.code = self.exit_code  # type: ignore[attr-defined] # SystemExit.code is writable
        if self.report is not None and trainer.is_global_zero:
            self.report(dict(p.result))


def _saved_at_step(trainer: pl.Trainer, step: int) -> str | None:
    """The file a ``ModelCheckpoint`` of ``trainer`` wrote at ``step`` (so the final save would only repeat it),
    or None. Reads ``ModelCheckpoint``'s ``_last_global_step_saved``/``_last_checkpoint_saved`` (Lightning 2.x);
    when they are missing it answers None and the checkpoint is saved again."""
    if step <= 0:
        return None
    for cb in trainer.checkpoint_callbacks:
        path = getattr(cb, "_last_checkpoint_saved", "")
        if getattr(cb, "_last_global_step_saved", None) == step and path and os.path.exists(path):
            return str(path)
    return None


def _save_whole(trainer: pl.Trainer, folder: str, name: str) -> str:
    """``trainer.save_checkpoint`` to a temp name in ``folder``, then ``rename(2)`` to ``name``; returns ``name``.

    Lightning's checkpoint IO writes through an fsspec transaction: a temp file in ``$TMPDIR`` moved onto the
    target. In a pod ``$TMPDIR`` is on the container's file system, not the checkpoint volume, so the move is a
    copy followed by ``copystat`` (writers.md §2): the file would appear whole, then change its mtime. Under a temp
    name (ignored by the sidecar) and one rename inside the folder, it appears once, complete.
    """
    tmp = os.path.join(folder, f".tmp-{name}")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, os.path.join(folder, name))
    trainer.strategy.barrier("kresume-preemption-save")
    return name
