"""What one rank's captured files say the whole multi-rank checkpoint must hold (docs/store-protocol.md
"Per-rank completeness"), read from the captured descriptors (the bytes about to be uploaded).

- DCP: the rank holding ``.metadata`` expects ``.metadata`` itself and every shard its storage
  extents name, at least ``offset + length`` bytes (:func:`kresume.formats.peek.dcp_storage_extents`);
- DeepSpeed: the rank holding ``*_model_states.pt`` expects it and, for each ``zero_pp_rank_R_*``
  shard kind it holds itself, the same shard of every dp rank ``0..dp_world_size-1`` (at least
  1 byte; ``dp_world_size`` from the model states, :func:`kresume.formats.peek.deepspeed_world_size`);
- anything else: nothing (the caller passes ``Expects(ranks=W)`` for ``kresume.dev/parts: all-ranks`` units).
"""

from __future__ import annotations

import pickle
import re

from kresume.formats import peek
from kresume.store.local import LocalCheckpoint, LocalFile
from kresume.store.parts import Expects

_DS_SHARD = re.compile(r"^(?P<pre>(?:.*/)?(?:bf16_)?zero_pp_rank_)(?P<rank>\d+)(?P<post>_mp_rank_\d+_(?:optim|model)_states\.pt)$")


def from_checkpoint(checkpoint: LocalCheckpoint) -> Expects:
    """The expectations of one rank's captured unit (rules in the module docstring); never raises
    for odd content (a ``.metadata`` that does not unpickle expects nothing: the sidecar's judge
    reports it)."""
    by_path = {f.relpath: f for f in checkpoint.files}
    meta = by_path.get(".metadata")
    if meta is not None:
        try:
            extents = peek.dcp_storage_extents(peek.read_all(meta.fd, meta.size))
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError):
            extents = None
        if extents:
            return Expects({".metadata": meta.size, **extents})
    models = [f for f in checkpoint.files if f.relpath.endswith("model_states.pt") and not _DS_SHARD.match(f.relpath)]
    for model in sorted(models, key=lambda f: f.relpath):
        world = _ds_world(model)
        if not world:
            continue
        folder = model.relpath.rsplit("/", 1)[0] + "/" if "/" in model.relpath else ""
        files = {model.relpath: 1}
        for f in checkpoint.files:
            m = _DS_SHARD.match(f.relpath)
            if m and f.relpath.startswith(folder) and "/" not in f.relpath[len(folder):]:
                for r in range(world):
                    files[f"{m['pre']}{r}{m['post']}"] = 1
        return Expects(files)
    return Expects()


def _ds_world(f: LocalFile) -> int | None:
    try:
        return peek.deepspeed_world_size(f.fd, f.size)
    except OSError:
        return None
