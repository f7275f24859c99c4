"""Hugging Face Trainer: save on SIGTERM with one callback, ``Trainer(..., callbacks=[PreemptionCallback()])``.

On SIGTERM the running optimizer step finishes; at its ``on_step_end`` the callback asks the Trainer to save
(``control.should_save``) and stop; the Trainer writes ``checkpoint-<step>/`` into ``output_dir`` (the watched
folder; ``trainer_state.json`` last, which is what the sidecar's completeness rule waits for) and calls
``on_save``, where the callback exits the process with 143. A SIGTERM that arrives while a scheduled save is
being written ends the run right after that save, without another step.

Compared with transformers' own ``TrainingArguments(enable_jit_checkpoint=True)`` (transformers 5.x,
``trainer_jit_checkpoint.py``), measured here with transformers 5.24.0 (tests/sidecar/test_sidecar_hooks.py):
that one waits ``kill_wait`` = 3 s after SIGTERM before it asks for the save (the steps of those 3 s run on),
may save in ``on_pre_optimizer_step`` (before the optimizer step of a step that then completes unsaved), writes
a sentinel file ``checkpoint-is-incomplete.txt`` inside the checkpoint folder while saving, and lets ``train()``
return, so a script that then ends exits 0 and a Job may count the preempted pod as Succeeded. Both save a
``checkpoint-N`` folder the sidecar commits; this callback saves after the running step at once and exits 143.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kresume import contract
from kresume.preemption import Preemption, training_finished


class PreemptionCallback(TrainerCallback):
    """Finish the current optimizer step on SIGTERM, save ``checkpoint-<step>/``, exit 143.

    Parameters
    ----------
    exit_code : int or None
        Exit status after the save (default 143 = 128 + SIGTERM); None lets ``train()`` return normally after
        the save (then exit non-zero yourself when ``callback.preemption.requested``).
    """

    def __init__(self, exit_code: int | None = contract.PREEMPTED_EXIT_CODE) -> None:
        self.exit_code = exit_code
        self.preemption: Preemption | None = None
        self._asked_at: float | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:  # noqa: D102
        if self.preemption is None:
            self.preemption = Preemption(lambda: None, folder=args.output_dir, exit_code=self.exit_code)
            self.preemption.start()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:  # noqa: D102
        p = self.preemption
        if p is not None and p.requested and not p.saved:
            control.should_save = True
            control.should_training_stop = True
            self._asked_at = time.time()
            p.presence.notice("saving", signal_at=p.latch.signal_at, step=state.global_step)
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:  # noqa: D102
        p = self.preemption
        if p is None or not p.requested or p.saved:
            return
        started = self._asked_at or p.latch.signal_at or time.time()
        p.mark_saved(f"checkpoint-{state.global_step}", step=state.global_step, started=started)
        if self.exit_code is not None:
            raise SystemExit(self.exit_code)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:  # noqa: D102
        if self.preemption is not None and not self.preemption.requested:
            # train() ran to its end, not stopped by SIGTERM: the notice says "finished" (a legacy-mode sidecar
            # under restartPolicy OnFailure may leave once the process exits).
            training_finished(self.preemption.presence.folder, step=state.global_step)
            self.preemption.close()
            self.preemption = None
