"""The bodies of ``kresume restore`` and ``kresume latest``: what the restore init step of every restarted pod
runs. Both the typer commands (:mod:`kresume.cli.store_cmds`) and the fast path (:mod:`kresume.cli.fast`) call
them, so output, errors and exit codes do not depend on which parsed the command line; nothing here imports
typer, rich (only for a progress bar or a note) or a module the command does not use.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from kresume.cli import session
from kresume.store import errors


def restore(url: str, dest: Path, storage_option: list[str] | None, checkpoint: str | None, progress: bool | None,
            rank: int | None, progress_every: float | None, cache_dir: Path | None, result_file: Path | None) -> None:
    """``kresume restore`` (its help text is the typer command's): resolve the checkpoint once, restore it
    from the node cache or the store, print the local path. Raises ``StoreError`` subclasses and
    :class:`~kresume.cli.session.OptionError`."""
    import time

    from kresume.cli.progresslog import ProgressLog

    t0 = time.monotonic()
    store = session.open_store(url, session.parse_storage_options(storage_option))
    show = sys.stderr.isatty() if progress is None else progress
    every = progress_every if progress_every is not None else (0.0 if show else 5.0)
    manifest = store.resolve_checkpoint(checkpoint)
    cache = None
    if cache_dir is not None:
        from kresume.store.nodecache import NodeCache

        cache = NodeCache(cache_dir, max_bytes=2**63)
    outcome: dict[str, Any] = {}
    plog = ProgressLog(f"restore {manifest.name}", manifest.total_bytes, every) if not show and every > 0 else None
    try:
        with session.progress_bar(manifest.total_bytes, f"restore {manifest.name}", show) as advance:
            path = store.restore(dest, manifest, progress=plog.advance if plog else advance, rank=rank,
                                 cache=cache, outcome=outcome)
    except errors.CorruptCheckpoint as exc:
        if exc.fix:
            raise
        raise type(exc)(exc.url, exc.detail, fix=f"kresume mark-bad {url} {manifest.id} makes latest skip it; "
                                                 "kresume ls shows older ids for --checkpoint") from exc
    outcome["seconds"] = round(time.monotonic() - t0, 3)
    if plog is not None:
        plog.finish(f"from the {'node cache' if outcome.get('source') == 'cache' else 'store'}")
    if result_file is not None:
        try:
            result_file.write_text(json.dumps(outcome, sort_keys=True))
        except OSError as exc:
            session.err_console().print(f"kresume restore: cannot write --result-file {result_file}: "
                                        f"{exc.strerror or exc}")
    print(path)


def latest(url: str, storage_option: list[str] | None, as_json: bool) -> None:
    """``kresume latest``: print the URL and step of the checkpoint a restarted run resumes from (one
    resolution). Raises ``StoreError`` subclasses (``NoCheckpoint``, ``BucketMissing``) and ``OptionError``."""
    store = session.open_store(url, session.parse_storage_options(storage_option))
    found = store.latest()
    if found is None:
        raise store.no_checkpoint("no valid committed checkpoint",
                                  fix="check the URL; `kresume ls` shows checkpoints marked bad")
    if as_json:
        print(json.dumps({"url": found.url, "step": found.step, "epoch": found.epoch, "id": found.checkpoint_id,
                          "name": found.manifest.name, "format": found.manifest.format,
                          "committed_at": found.manifest.committed_at, "fallback_reason": found.fallback_reason}))
    else:
        print(f"{found.url}\tstep={'' if found.step is None else found.step}")
        if found.fallback_reason:
            session.err_console().print(f"note: {found.fallback_reason}")
