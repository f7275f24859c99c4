"""`kresume prune` as a user runs it on moto S3: bad-marked checkpoints never make it delete the
checkpoint a run resumes from (a first-time user lost every valid checkpoint this way)."""

from __future__ import annotations

import json

import torch


def _commit(cli, tmp_path, url, env, step):
    path = tmp_path / f"s{step}" / f"epoch=0-step={step}.ckpt"
    path.parent.mkdir()
    torch.save({"global_step": step, "w": torch.full((100,), float(step))}, path)
    proc = cli("commit", "--no-progress", str(path), url, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr


def test_prune_keep_last_one_after_mark_bad_of_the_newest(cli, moto_run_url, tmp_path):
    url, env = moto_run_url
    for step in (200, 400, 450, 500):
        _commit(cli, tmp_path, url, env, step)
    ids = {json.loads(line)["step"]: json.loads(line)["id"]
           for line in cli("ls", "--json", url, cwd=tmp_path, env=env).stdout.splitlines()}
    marked = cli("mark-bad", url, ids[500], cwd=tmp_path, env=env)
    assert marked.returncode == 0 and f"pointer\t{ids[450]}\t" in marked.stdout  # off the bad one
    proc = cli("prune", url, "--keep-last", "1", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert lines == [["deleted", ids[200]],
                     ["kept", ids[500], "marked bad"],
                     ["kept", ids[450], "one of the 1 newest valid, the pointer's target"],
                     ["kept", ids[400], "the fallback: newest valid checkpoint older than latest (none is verified yet)"]]
    latest = cli("latest", "--json", url, cwd=tmp_path, env=env)
    assert latest.returncode == 0 and json.loads(latest.stdout)["id"] == ids[450]


def test_prune_help_states_the_bad_mark_rule(cli, tmp_path):
    text = " ".join(cli("prune", "--help", cwd=tmp_path, env={"COLUMNS": "300"}).stdout.split())
    assert "Only valid checkpoints (not marked bad" in text
    assert "Checkpoints marked bad are kept" in text
    assert "newest valid checkpoint (what `latest` resolves to)" in text
