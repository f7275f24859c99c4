"""`kresume ls` shows the parts of multi-rank steps not committed yet, and `kresume restore --rank`
downloads one rank's files (moto S3; the store side is tests/store/test_store_parts*.py)."""

from __future__ import annotations

import json

from kresume.store import layout, parts
from kresume.store.runstore import RunStore


def _rank_folder(tmp_path, rank):
    folder = tmp_path / f"rank{rank}" / "step_300"
    folder.mkdir(parents=True)
    (folder / f"rank_{rank}.data").write_bytes(b"r%d" % rank * 100)
    (folder / "meta.json").write_text("{}")
    return folder


def test_ls_shows_parts_per_uncommitted_step_and_restore_by_rank(cli, moto_run_url, moto_s3, tmp_path):
    url, env = moto_run_url
    store = RunStore.open(url, moto_s3.storage_options)
    epoch = layout.new_epoch_token()
    for r in (0, 2):
        store.commit_part(_rank_folder(tmp_path, r), rank=r, world_size=3, epoch=epoch, expect=parts.Expects(ranks=3))
    proc = cli("ls", url, cwd=tmp_path, env=env)  # nothing committed yet, but the run exists
    assert proc.returncode == 0, proc.stderr
    assert "not committed" in proc.stdout and "2/3" in proc.stdout and "waiting for rank(s) 1" in proc.stdout
    [row] = [json.loads(line) for line in cli("ls", "--json", url, cwd=tmp_path, env=env).stdout.splitlines()]
    assert (row["kind"], row["step"], row["ranks"], row["missing_ranks"]) == ("uncommitted", 300, [0, 2], [1])
    store.commit_part(_rank_folder(tmp_path, 1), rank=1, world_size=3, epoch=epoch, expect=parts.Expects(ranks=3))
    rows = [json.loads(line) for line in cli("ls", "--json", url, cwd=tmp_path, env=env).stdout.splitlines()]
    assert [(r["kind"], r["files"], r["pointer"]) for r in rows] == [("checkpoint", 4, True)]
    proc = cli("restore", "--no-progress", "--rank", "2", url, str(tmp_path / "dest"), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "dest" / "step_300").iterdir()) == ["meta.json", "rank_2.data"]
