"""Format and step detection from names and content, without unpickling."""

from __future__ import annotations

import json

import pytest
import torch

from kresume.formats.metadata import describe, parse_name, torch_zip_counters


@pytest.mark.parametrize("name,step,epoch", [
    ("epoch=3-step=400.ckpt", 400, 3),
    ("checkpoint-1200", 1200, None),
    ("global_step30", 30, None),
    ("step_7", 7, None),
    ("last.ckpt", None, None),
    ("model.safetensors", None, None),
])
def test_parse_name(name, step, epoch):
    assert parse_name(name) == (step, epoch)


def test_lightning_counters_come_from_content(tmp_path):
    p = tmp_path / "last.ckpt"
    torch.save({"epoch": 4, "global_step": 1234, "state_dict": {"w": torch.zeros(3)},
                "loops": {"fit_loop": {"global_step": 1}}}, p)
    assert torch_zip_counters(p) == ("lightning", 1234, 4)
    info = describe(p)
    assert (info.format, info.step, info.epoch) == ("lightning", 1234, 4)


def test_plain_torch_file_and_garbage(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    assert describe(tmp_path / "model.pt").format == "torch"
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    assert describe(tmp_path / "junk.pt").format == "unknown"


def test_folder_formats(tmp_path):
    hf = tmp_path / "checkpoint-50"
    hf.mkdir()
    (hf / "trainer_state.json").write_text(json.dumps({"global_step": 50, "epoch": 1.0}))
    assert describe(hf) == describe(hf).__class__("hf", 50, 1)
    dcp = tmp_path / "step_9"
    dcp.mkdir()
    (dcp / ".metadata").write_bytes(b"x")
    assert (describe(dcp).format, describe(dcp).step) == ("dcp", 9)
    ds = tmp_path / "global_step3"
    ds.mkdir()
    (ds / "mp_rank_00_model_states.pt").write_bytes(b"x")
    assert (describe(ds).format, describe(ds).step) == ("deepspeed", 3)
