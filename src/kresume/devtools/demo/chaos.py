"""The preemption plan of ``kresume demo --preemptions N --seed S`` (pure, seeded).

Modes (each restart must still resume from the newest committed checkpoint):

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

MODES = ("write", "upload", "kill")
DESCRIPTIONS = {
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


def plan(count: int, seed: int, every_n_steps: int) -> list[Planned]:
    """``count`` preemptions; modes cycle through a seeded shuffle of :data:`MODES` (so any 3 in a row cover
    all of them); ``min_steps`` uniform in [every/2, 2*every]."""
    rng = random.Random(seed)
    modes: list[str] = []
    while len(modes) < count:
        cycle = list(MODES)
        rng.shuffle(cycle)
        modes += cycle
    return [Planned(m, rng.randint(max(1, every_n_steps // 2), 2 * every_n_steps)) for m in modes[:count]]
