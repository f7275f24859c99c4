"""`kresume ls` shows pins, `prune --dry-run` says why each kept checkpoint is kept, `unmark-bad`
undoes `mark-bad` (moto S3, as a user runs them)."""

from __future__ import annotations

import json

import torch

from kresume.store.runstore import RunStore


def _commit(cli, tmp_path, url, env, step, *extra):
    path = tmp_path / f"s{step}" / f"epoch=0-step={step}.ckpt"
    path.parent.mkdir()
    torch.save({"global_step": step, "w": torch.full((20,), float(step))}, path)
    proc = cli("commit", "--no-progress", str(path), url, *extra, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\t")[0]


def test_pins_dry_run_reasons_and_unmark_bad(cli, moto_run_url, moto_s3, tmp_path):
    url, env = moto_run_url
    a_url = _commit(cli, tmp_path, url, env, 100)
    _commit(cli, tmp_path, url, env, 150)
    b_url = _commit(cli, tmp_path, url, env, 200, "--resumed-from", a_url)
    store = RunStore.open(url, moto_s3.storage_options)
    store.pin("trainer-0", a_url, ttl_seconds=300)
    rows = [json.loads(line) for line in cli("ls", "--json", url, cwd=tmp_path, env=env).stdout.splitlines()]
    ids = {r["step"]: r["id"] for r in rows if r["kind"] == "checkpoint"}
    [pin] = [r for r in rows if r["kind"] == "pin"]
    assert (pin["holder"], pin["checkpoint"], pin["live"]) == ("trainer-0", ids[100], True)
    table = cli("ls", url, cwd=tmp_path, env=env).stdout
    assert "trainer-0" in table and "live" in table
    proc = cli("prune", url, "--keep-last", "1", "--dry-run", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert ["would delete", ids[150]] in lines
    kept = {cid: why for verb, cid, *why in lines if verb == "kept"}
    assert "pinned by trainer-0" in kept[ids[100]][0] and "newest verified" in kept[ids[100]][0]
    assert "one of the 1 newest valid" in kept[ids[200]][0]
    assert cli("mark-bad", url, ids[200], cwd=tmp_path, env=env).returncode == 0
    proc = cli("unmark-bad", url, ids[200], cwd=tmp_path, env=env)
    assert proc.returncode == 0 and f"pointer\t{ids[200]}" in proc.stdout, proc.stderr
    again = cli("unmark-bad", url, ids[200], cwd=tmp_path, env=env)
    assert again.returncode == 4 and "not marked bad" in again.stderr
    assert b_url.endswith(".ckpt")


def test_prune_help_says_a_mark_is_undone_with_unmark_bad(cli, tmp_path):
    text = " ".join(cli("prune", "--help", cwd=tmp_path, env={"COLUMNS": "300"}).stdout.split())
    assert "`kresume unmark-bad` undoes a mark" in text and "can be undone" not in text
    assert "live pin" in text
