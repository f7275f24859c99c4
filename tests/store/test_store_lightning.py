"""Issue 2 acceptance: real Lightning checkpoints through the CLI, on every backend.

`kresume commit` → `kresume latest` → `kresume restore` round-trips a real Lightning `.ckpt`,
and `trainer.fit(ckpt_path=<the URL kresume latest prints>)` resumes at the saved step directly
from `s3://` on the moto server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kresume import contract
from kresume.cli import app

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "lightning" / "train.py"


def _train(ckpt_dir: Path, max_steps: int, env: dict[str, str] | None = None, every: int = 10) -> list[dict]:
    """Run the example trainer as a child process; return its JSON events."""
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "--max-steps", str(max_steps), "--every-n-steps", str(every),
         "--save-top-k", "-1", "--ckpt-dir", str(ckpt_dir)],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300, cwd=ckpt_dir.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def lightning_ckpts(tmp_path_factory) -> Path:
    """A real Lightning run of 20 steps, checkpoints at steps 10 and 20."""
    ckpt_dir = tmp_path_factory.mktemp("lightning") / "ckpts"
    _train(ckpt_dir, 20)
    # the example trainer also holds its preemption lock there and, after a fit that ends normally, leaves the
    # 'finished' notice (contract.TRAINER_LOCK / TRAINER_NOTICE, docs/preemption.md): neither is a checkpoint
    handshake = (contract.TRAINER_LOCK, contract.TRAINER_NOTICE)
    assert sorted(p.name for p in ckpt_dir.iterdir() if p.name not in handshake) == \
        ["epoch=0-step=10.ckpt", "epoch=0-step=20.ckpt"]
    return ckpt_dir


def _cli(*args: str, options: dict | None = None) -> str:
    opts = []
    for key, value in (options or {}).items():
        opts += ["-o", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    result = CliRunner().invoke(app, [*args[:1], *opts, *args[1:]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_round_trips_a_lightning_checkpoint(store_base, lightning_ckpts, tmp_path):
    url = store_base.join("ns", "lightning-run")
    src = lightning_ckpts / "epoch=0-step=20.ckpt"
    committed = _cli("commit", "--no-progress", str(src), url, options=store_base.options).split("\t")
    assert committed[1].strip() == "step=20"
    latest = json.loads(_cli("latest", "--json", url, options=store_base.options))
    assert latest["url"] == committed[0] and latest["step"] == 20 and latest["format"] == "lightning"
    restored = Path(_cli("restore", "--no-progress", url, str(tmp_path / "dest"), options=store_base.options).strip())
    original, copy = torch.load(src, weights_only=False), torch.load(restored, weights_only=False)
    assert copy["global_step"] == 20
    for key, tensor in original["state_dict"].items():
        assert torch.equal(tensor, copy["state_dict"][key])
    verified = _cli("verify", "--checksums", url, options=store_base.options).strip()
    assert verified.startswith("ok: 1 checkpoint, 1 file, ") and verified.endswith("bytes checked (sizes and CRC-32C)")


def test_fit_resumes_directly_from_s3_on_moto(moto_s3, lightning_ckpts, tmp_path):
    url = moto_s3.url("kresume-test", "ns/resume-direct")
    _cli("commit", "--no-progress", str(lightning_ckpts / "epoch=0-step=10.ckpt"), url, options=moto_s3.storage_options)
    latest = json.loads(_cli("latest", "--json", url, options=moto_s3.storage_options))
    assert latest["url"].startswith("s3://")
    events = _train(tmp_path / "resumed", 15, env={**moto_s3.env, "KRESUME_RESUME_FROM": latest["url"]}, every=5)
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from"] == latest["url"]
    assert start["global_step"] == 10
    assert next(e for e in events if e["event"] == "done")["global_step"] == 15


def test_resume_from_resolves_the_run_url_itself(moto_s3, lightning_ckpts, tmp_path):
    """Without the operator: KRESUME_RUN_URL only, the helper resolves latest from the store."""
    url = moto_s3.url("kresume-test", "ns/resume-self")
    for name in ("epoch=0-step=10.ckpt", "epoch=0-step=20.ckpt"):
        _cli("commit", "--no-progress", str(lightning_ckpts / name), url, options=moto_s3.storage_options)
    events = _train(tmp_path / "resumed", 25, env={**moto_s3.env, "KRESUME_RUN_URL": url}, every=5)
    start = next(e for e in events if e["event"] == "start")
    assert start["global_step"] == 20 and start["resumed_from"].endswith("/epoch=0-step=20.ckpt")


@pytest.mark.parametrize("backend_name", ["file", "s3-moto"])
def test_restored_folder_checkpoint_loads_in_lightning_and_torch(backend_name, objstore_pool, lightning_ckpts,
                                                                  tmp_path):
    from _fixtures.objstores import make_store_base

    base = make_store_base(backend_name, objstore_pool, tmp_path)
    folder = tmp_path / "bundle" / "step_10"
    folder.mkdir(parents=True)
    shutil.copy(lightning_ckpts / "epoch=0-step=10.ckpt", folder / "trainer.ckpt")
    torch.save({"weights": torch.arange(10.0)}, folder / "extra.pt")
    url = base.join("ns", "folder-run")
    _cli("commit", "--no-progress", str(folder), url, options=base.options)
    restored = Path(_cli("restore", "--no-progress", url, str(tmp_path / "dest"), options=base.options).strip())
    assert restored.name == "step_10"
    assert torch.equal(torch.load(restored / "extra.pt")["weights"], torch.arange(10.0))
    events = _train(tmp_path / "again", 12, env={"KRESUME_RESUME_FROM": str(restored / "trainer.ckpt")}, every=2)
    assert next(e for e in events if e["event"] == "start")["global_step"] == 10
