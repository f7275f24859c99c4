"""Pure decisions of a multi-rank run's sidecar (docs/store-protocol.md "Which units go through parts").

With ``KRESUME_WORLD_SIZE`` > 1:

- sharded formats (``dcp``, ``deepspeed``) always go through per-rank parts: judged by what this rank's
  folder can show (:func:`kresume.formats.partjudge.judge_part`), committed with
  :meth:`RunStore.commit_part` under the epoch's shared id;
- with ``kresume.dev/parts: all-ranks`` (``KRESUME_PARTS``) every unit does;
- single-writer formats (a torch/Lightning file, safetensors, an HF folder, …) keep the single-rank
  path with a fresh id: whichever rank wrote one commits it, and a rank that writes nothing is never
  waited for (Lightning DDP and HF Trainer save on rank 0 only).

A part expects a part from every rank (``expects.ranks = W``: every rank of a sharded save writes
its own files — each DCP rank at least one ``__R_0.distcp``, each ZeRO rank its ``zero_pp_rank_R_*``)
plus what its content names (DCP ``.metadata``'s shards, DeepSpeed's model states:
:func:`kresume.store.expects.from_checkpoint`).
"""

from __future__ import annotations

from kresume.formats.partjudge import SHARDED_FORMATS
from kresume.sidecar.settings import PARTS_ALL_RANKS, SidecarSettings
from kresume.store import expects, layout
from kresume.store.local import LocalCheckpoint
from kresume.store.parts import Expects


def uses_parts(settings: SidecarSettings, fmt: str) -> bool:
    """True when a unit of format ``fmt`` is committed as this rank's part (rules in the module docstring)."""
    return settings.multi_rank and (fmt in SHARDED_FORMATS or settings.parts == PARTS_ALL_RANKS)


def part_expects(snap: LocalCheckpoint, world_size: int) -> Expects:
    """What this rank's part says the whole holds: its content's expectations and a part from each of
    ranks ``0..world_size-1``."""
    return Expects(expects.from_checkpoint(snap).files, ranks=world_size)


def epoch_of(checkpoint_id: str) -> str | None:
    """The resume-epoch token (``<ts>-<rand>``) a multi-rank id was named in; ``None`` for a single-rank id."""
    key = layout.parse_checkpoint_id(checkpoint_id)
    if key is None or not key.multi_rank:
        return None
    return f"{key.started}-{key.rand}"
