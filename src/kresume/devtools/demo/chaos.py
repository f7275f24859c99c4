"""The preemption plan of ``kresume demo --preemptions N --seed S`` (pure, seeded).

Modes (each restart must still resume from the newest committed checkpoint; after a graceful one — every mode
but ``kill`` — at the very step where the old pod stopped, since the example trainer saves on SIGTERM with
``kresume.lightning.PreemptionCheckpoint``):

- ``step``: SIGTERM (with grace) in the middle of a training step that is not a checkpoint step: the trainer
  finishes the step, saves, exits;
- ``write``: SIGTERM (with grace) the moment the trainer reports a step at which its ``ModelCheckpoint``
  saves: Lightning runs checkpoint callbacks after the others in the same hook, so the save is starting
  or under way;
- ``upload``: SIGTERM (with grace) the moment a new checkpoint file appears in the pod's checkpoint
  folder, while the sidecar is uploading it (the grace period lets it commit or abandon it);
- ``kill``: SIGKILL of every container at a random step, no grace (node crash, OOM): whatever was in
  flight is lost.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MODES = ("step", "write", "upload", "kill")
GRACEFUL = ("step", "write", "upload")
"""Modes with a grace period: a restart after one must lose no step."""
DESCRIPTIONS = {
    "step": "SIGTERM during a training step",
    "write": "SIGTERM while a checkpoint is written",
    "upload": "SIGTERM while the sidecar uploads a checkpoint",
    "kill": "SIGKILL, no grace",
}


@dataclass(frozen=True)
class Planned:
    """One preemption: ``mode`` (see module docstring) and ``min_steps``, the steps the restarted trainer
    must make after its start before the preemption is armed (the random moment)."""

    mode: str
    min_steps: int


def plan(count: int, seed: int, every_n_steps: int, modes_in: tuple[str, ...] = MODES) -> list[Planned]:
    """``count`` preemptions; modes cycle through a seeded shuffle of ``modes_in`` (default :data:`MODES`, so
    any 4 in a row cover all of them); ``min_steps`` uniform in [every/2, 2*every]."""
    unknown = [m for m in modes_in if m not in MODES]
    if unknown or not modes_in:
        raise ValueError(f"--modes: {', '.join(unknown) or 'empty'} not in {', '.join(MODES)}")
    rng = random.Random(seed)
    modes: list[str] = []
    while len(modes) < count:
        cycle = list(modes_in)
        rng.shuffle(cycle)
        modes += cycle
    return [Planned(m, rng.randint(max(1, every_n_steps // 2), 2 * every_n_steps)) for m in modes[:count]]


def lost_steps_problem(mode: str, lost: int | None, every_n_steps: int) -> str | None:
    """The acceptance rule of issue 15 for one restart: a graceful preemption (:data:`GRACEFUL`) loses 0 steps;
    a SIGKILL loses at most one checkpoint interval. None when the rule holds (or ``lost`` is unknown)."""
    if lost is None:
        return None
    if mode in GRACEFUL and lost != 0:
        return f"lost {lost} steps after a graceful preemption ({DESCRIPTIONS[mode]}); expected 0"
    if mode == "kill" and lost > every_n_steps:
        return f"lost {lost} steps after a SIGKILL; expected at most one checkpoint interval ({every_n_steps})"
    if lost < 0:
        return f"resumed {-lost} steps after the last step the old trainer reported"
    return None
