"""`kresume mark-bad` takes what `restore -c` takes (an id or a name) on moto S3; a name several
checkpoints share is refused with their ids (a first-time user was told "checkpoint 'm400.ckpt' is
not committed" for a name `ls` showed as committed)."""

from __future__ import annotations

import json

import torch


def _commit(cli, tmp_path, url, env, name, step):
    path = tmp_path / f"src-{step}" / name
    path.parent.mkdir()
    torch.save({"global_step": step, "w": torch.full((50,), float(step))}, path)
    proc = cli("commit", "--no-progress", str(path), url, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr


def _ls(cli, tmp_path, url, env):
    return [json.loads(line) for line in cli("ls", "--json", url, cwd=tmp_path, env=env).stdout.splitlines()]


def test_mark_bad_by_unique_name(cli, moto_run_url, tmp_path):
    url, env = moto_run_url
    _commit(cli, tmp_path, url, env, "m400.ckpt", 400)
    _commit(cli, tmp_path, url, env, "m500.ckpt", 500)
    proc = cli("mark-bad", url, "m400.ckpt", "--reason", "nan loss", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in _ls(cli, tmp_path, url, env)}
    assert proc.stdout == f"marked bad\t{rows['m400.ckpt']['id']}\tm400.ckpt\n"
    assert rows["m400.ckpt"]["bad"] and not rows["m500.ckpt"]["bad"]
    # an id still works, and a name nothing has is exit 4
    assert cli("mark-bad", url, rows["m500.ckpt"]["id"], cwd=tmp_path, env=env).returncode == 0
    proc = cli("mark-bad", url, "m600.ckpt", cwd=tmp_path, env=env)
    assert proc.returncode == 4 and "no committed checkpoint with id or name 'm600.ckpt'" in proc.stderr


def test_mark_bad_refuses_an_ambiguous_name_listing_the_ids(cli, moto_run_url, tmp_path):
    url, env = moto_run_url
    for step in (100, 200):
        _commit(cli, tmp_path, url, env, "last.ckpt", step)
    ids = [r["id"] for r in reversed(_ls(cli, tmp_path, url, env))]
    proc = cli("mark-bad", url, "last.ckpt", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"'last.ckpt' names 2 committed checkpoints: {ids[0]} (step 200), {ids[1]} (step 100)" in line
    assert not any(r["bad"] for r in _ls(cli, tmp_path, url, env))
    # restore -c keeps taking the newest with that name
    proc = cli("restore", "--no-progress", url, "dest", "-c", "last.ckpt", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert torch.load(tmp_path / "dest" / "last.ckpt")["global_step"] == 200
