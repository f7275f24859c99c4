"""Lightning ``ModelCheckpoint(save_last=True)``: bytes uploaded and stored per checkpoint, without and with
aliases (issue 17 item 2 target; docs/store-protocol.md "Aliases"), in one run against local SeaweedFS.

Setup: a real Lightning run (``save_last=True, save_top_k=-1, every_n_train_steps=5``; an MLP whose
checkpoint with Adam state is ~``--mb`` MB) saves ``--saves`` times; a callback copies each file right after
it is saved (``last.ckpt`` is replaced at every save), so both modes commit exactly the same files in the
order Lightning wrote them (step file, then ``last.ckpt``), each with ``RunStore.commit`` as the sidecar does.
"before" commits with an alias index that never learns anything (every file uploads, as before aliases);
"after" is the normal commit. Bytes uploaded are counted by the commits' ``progress`` callbacks (what was
sent), bytes stored by listing the run's ``checkpoints/`` after the run.

    nice -n 5 .venv/bin/python bench/aliases_row.py [--saves 5] [--mb 16] [--out bench/results/aliases.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import servers  # noqa: E402
from kresume import contract  # noqa: E402
from kresume.store.aliases import CommittedObjects  # noqa: E402
from kresume.store.runstore import RunStore  # noqa: E402


def train(out: Path, saves: int, mb: int) -> list[Path]:
    """Run Lightning; return a copy of every saved file, in save order (``out/<i>/<name>``)."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    copies: list[Path] = []

    class Copying(ModelCheckpoint):
        def _save_checkpoint(self, trainer, filepath):  # type: ignore[no-untyped-def]
            super()._save_checkpoint(trainer, filepath)
            dst = out / "seq" / f"{len(copies):03d}" / os.path.basename(filepath)
            dst.parent.mkdir(parents=True)
            shutil.copy2(filepath, dst)
            copies.append(dst)

    width = max(64, int((mb * 2**20 / 12) ** 0.5))  # width² params × 4 B × (weights + 2 Adam moments)

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Linear(width, width))

        def training_step(self, batch, _):  # type: ignore[no-untyped-def]
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x).mean(1, keepdim=True), y)

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    ds = TensorDataset(torch.randn(40, 16), torch.randn(40, 1))
    cb = Copying(dirpath=str(out / "ckpt"), save_last=True, save_top_k=-1, every_n_train_steps=5)
    pl.Trainer(max_steps=5 * saves, callbacks=[cb], logger=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(Model(), DataLoader(ds, batch_size=8))
    return copies


def stored_bytes(store: RunStore) -> int:
    root = store._path(contract.CHECKPOINTS_DIR)
    store.fs.invalidate_cache(root)
    return sum(int(m["size"]) for m in store.fs.find(root, detail=True).values() if m.get("type") != "directory")


def commit_all(target: servers.Target, files: list[Path], aliases: bool) -> dict[str, Any]:
    store = RunStore.open(target.url(f"aliases-{uuid.uuid4().hex[:8]}/ns/run/"), target.storage_options)
    if not aliases:
        store.objects = CommittedObjects(limit=0)  # learns nothing: every file uploads (the behaviour before)
    rows = []
    for path in files:
        sent = [0]
        t0 = time.perf_counter()
        m = store.commit(path, progress=lambda n: sent.__setitem__(0, sent[0] + n))
        rows.append({"name": m.name, "step": m.step, "bytes": m.total_bytes, "uploaded": sent[0],
                     "alias": m.aliases, "seconds": round(time.perf_counter() - t0, 3)})
    return {"commits": rows, "uploaded": sum(r["uploaded"] for r in rows), "stored": stored_bytes(store),
            "logical": sum(r["bytes"] for r in rows), "seconds": round(sum(r["seconds"] for r in rows), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--saves", type=int, default=5)
    ap.add_argument("--mb", type=int, default=16, help="approximate checkpoint size, MB")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kresume-aliases-") as tmp:
        files = train(Path(tmp), args.saves, args.mb)
        target = servers.start("seaweedfs")
        try:
            result = {"saves": args.saves, "files": len(files), "file_bytes": [p.stat().st_size for p in files],
                      "before": commit_all(target, files, aliases=False),
                      "after": commit_all(target, files, aliases=True), "load": os.getloadavg()}
        finally:
            target.server.stop()
    for mode in ("before", "after"):
        r = result[mode]
        print(f"{mode:6}: uploaded {r['uploaded'] / 1e6:.1f} MB, stored {r['stored'] / 1e6:.1f} MB for "
              f"{args.saves} saves ({r['uploaded'] / args.saves / 1e6:.2f} MB uploaded per save; "
              f"{sum(c['alias'] for c in r['commits'])} aliases; commits {r['seconds']:.2f} s)")
    print(f"after/before uploaded: {result['after']['uploaded'] / result['before']['uploaded']:.3f}; "
          f"load average {result['load'][0]:.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
