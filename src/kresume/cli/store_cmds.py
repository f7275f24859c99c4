"""Store commands: ``ls``, ``latest``, ``verify``, ``restore``, ``prune``, ``commit``, ``mark-bad``, ``unmark-bad``."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from kresume.cli import oneshot, session
from kresume.cli.session import _budget, budget_seconds, end_command  # noqa: F401  (the root callback's, tests')
from kresume.store import errors
from kresume.store.runstore import RunStore

_URL_HELP = "Run URL, e.g. s3://bucket/prefix/<namespace>/<run>/ (gs://, az://, abfs://, file://, memory:// too)."
_OPTS_HELP = ("fsspec storage option KEY=VALUE (repeatable; VALUE parsed as JSON when it parses, e.g. "
              "client_kwargs='{\"endpoint_url\":\"http://127.0.0.1:8333\"}'). FSSPEC_* env and fsspec config files apply too.")

out = Console(width=None if sys.stdout.isatty() else 200)
err = session.err_console()


@contextmanager
def _usage_checked() -> Iterator[None]:
    """A bad ``--storage-option`` (:class:`~kresume.cli.session.OptionError`) as click's usage error (exit 2)."""
    try:
        yield
    except session.OptionError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param_hint) from None


def _runs_hint(store: Any) -> str:
    """The fix of ``ls`` on a URL that is no run: the runs below it, when it is a namespace or base folder."""
    from kresume.store.discover import runs_below

    try:
        runs = runs_below(store.fs, store.root)
    except Exception:  # noqa: BLE001 - a hint only: the error stays "not a kresume run"
        runs = []
    if not runs:
        return "check the URL; runs live at <policy storage>/<namespace>/<run>/"
    base = store.url.rstrip("/")
    return (f"runs below it: {', '.join(r + '/' for r in runs)}; list one with kresume ls {base}/{runs[0]}/")


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["key=value", …]`` → dict (:func:`kresume.cli.session.parse_storage_options`); raises
    ``typer.BadParameter`` naming the bad item."""
    with _usage_checked():
        return session.parse_storage_options(pairs)


def _open(url: str, storage_option: list[str] | None) -> RunStore:
    return session.open_store(url, parse_storage_options(storage_option))


_bar = session.progress_bar


StorageOpt = typer.Option(None, "--storage-option", "-o", help=_OPTS_HELP, metavar="KEY=VALUE")


def register(app: typer.Typer) -> None:
    """Attach the store commands to ``app``."""

    @app.command("ls")
    def ls_cmd(url: str = typer.Argument(..., help=_URL_HELP), storage_option: Optional[list[str]] = StorageOpt,
               as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of tables (each line "
                                            "has kind: checkpoint or uncommitted).")) -> None:
        """List committed checkpoints of a run, oldest first (by step, then commit time); the pointer's
        target is marked with *, checkpoints marked bad (skipped by `latest`) with BAD. Multi-rank steps
        not committed yet are listed after them with the ranks that recorded their part and what is
        missing (a stuck rank shows here), then pins: checkpoints live pods resumed from, with their
        age by the store's clock (a stale pin no longer protects)."""
        store = _open(url, storage_option)
        manifests = store.list()
        pointer = store.read_pointer()
        bad = store.bad_ids()
        waiting = store.pending()
        pinned = store.pins() if _has_pins(store) else []
        if not manifests and pointer is None and not waiting:
            missing = store.no_checkpoint("")  # BucketMissing when the bucket does not exist
            if isinstance(missing, errors.BucketMissing):
                raise missing
            raise errors.NotARun(store.url, "no manifests and no pointer", fix=_runs_hint(store))
        if as_json:
            for m in manifests:
                print(json.dumps({"kind": "checkpoint", "id": m.id, "name": m.name, "step": m.step, "epoch": m.epoch,
                                  "format": m.format, "bytes": m.total_bytes, "files": len(m.files),
                                  "stored_bytes": m.stored_bytes, "aliases": sorted({f.alias for f in m.files if f.alias}),
                                  "committed_at": m.committed_at, "url": store.checkpoint_url(m),
                                  "pointer": bool(pointer and pointer.checkpoint == m.id), "bad": m.id in bad}))
            for w in reversed(waiting):
                print(json.dumps({"kind": "uncommitted", "id": w.checkpoint_id, "name": w.name, "step": w.step,
                                  "ranks": list(w.ranks), "world_size": w.world_size,
                                  "missing_ranks": list(w.missing_ranks), "missing_files": w.missing_files,
                                  "reason": w.reason, "conflict": w.conflict}))
            for p in pinned:
                print(json.dumps({"kind": "pin", "holder": p.holder, "checkpoint": p.checkpoint, "pod": p.pod,
                                  "namespace": p.namespace, "ttl_seconds": p.ttl_seconds,
                                  "age_seconds": p.age_seconds, "live": p.live}))
            return
        table = Table("", "ID", "NAME", "STEP", "FORMAT", "SIZE", "FILES", "COMMITTED", "BAD")
        for m in manifests:
            table.add_row("*" if pointer and pointer.checkpoint == m.id else "", m.id, m.name,
                          "" if m.step is None else str(m.step), m.format, _human(m.total_bytes),
                          _files_cell(m), m.committed_at[:19], "bad" if m.id in bad else "")
        out.print(table)
        if waiting:
            parts_table = Table("UNCOMMITTED ID", "NAME", "STEP", "PARTS", "STATE", title="multi-rank steps not committed")
            for w in reversed(waiting):
                have = f"{len(w.ranks)}/{w.world_size}" if w.world_size else str(len(w.ranks))
                parts_table.add_row(w.checkpoint_id, w.name, "" if w.step is None else str(w.step), have,
                                    ("CONFLICT: " if w.conflict else "") + w.reason)
            out.print(parts_table)
        if pinned:
            pins_table = Table("HOLDER", "CHECKPOINT", "AGE", "TTL", "STATE", title="pins (retention keeps live ones)")
            for p in pinned:
                pins_table.add_row(p.holder, p.checkpoint, "?" if p.age_seconds is None else f"{p.age_seconds:.0f} s",
                                   f"{p.ttl_seconds:g} s", "live" if p.live else "stale (ignored)")
            out.print(pins_table)

    @app.command("latest")
    def latest_cmd(url: str = typer.Argument(..., help=_URL_HELP), storage_option: Optional[list[str]] = StorageOpt,
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
        """Print the URL and step of the checkpoint a restarted run resumes from.

        Pointer first; falls back to the newest manifest whose objects all exist with their sizes.
        Exit 4 when the run has no valid committed checkpoint, 7 when the bucket does not exist.
        """
        with _usage_checked():
            oneshot.latest(url, storage_option, as_json)

    @app.command("verify")
    def verify_cmd(url: str = typer.Argument(..., help=_URL_HELP), storage_option: Optional[list[str]] = StorageOpt,
                   checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Only this checkpoint id."),
                   checksums: bool = typer.Option(False, "--checksums",
                                                  help="Also download-stream every object and compare CRC-32C.")) -> None:
        """Check committed checkpoints: every object exists with its recorded size (and checksum).

        Exit 0 when clean ("ok: N checkpoints, M files, B bytes checked"), 9 when any problem was found
        (each printed on one line), 4 when nothing is committed at the URL, 7 when the bucket does not exist.
        """
        store = _open(url, storage_option)
        report = store.check(checkpoint, checksums=checksums)
        for p in report.problems:
            print(f"{p.checkpoint_id}: {p.message}")
        if report.problems:
            raise typer.Exit(errors.CorruptCheckpoint.exit_code)
        what = "sizes and CRC-32C" if checksums else "sizes"
        print(f"ok: {report.checkpoints} checkpoint{'s' * (report.checkpoints != 1)}, {report.files} "
              f"file{'s' * (report.files != 1)}, {report.bytes} bytes checked ({what})")

    @app.command("restore")
    def restore_cmd(url: str = typer.Argument(..., help=_URL_HELP),
                    dest: Path = typer.Argument(..., help="Local folder; the checkpoint lands at DEST/<name>."),
                    storage_option: Optional[list[str]] = StorageOpt,
                    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c",
                                                             help="Checkpoint id or name (the newest with that name; default: latest)."),
                    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                                            help="Progress bar (default: when stderr is a terminal)."),
                    rank: Optional[int] = typer.Option(
                        None, "--rank", min=0, help="Multi-rank checkpoint: download only this rank's files "
                        "(DCP __R_*.distcp, DeepSpeed zero_pp_rank_R_*, *rank_R*) plus the files no rank owns "
                        "(.metadata, model states, latest). Default: the whole folder (DCP can reshard on load)."),
                    progress_every: Optional[float] = typer.Option(
                        None, "--progress-every", min=0,
                        help="Without a bar: a progress line on stderr (bytes, rate, ETA) every N seconds, and one at "
                             "the end; 0 = none (default: 5 when stderr is not a terminal)."),
                    cache_dir: Optional[Path] = typer.Option(
                        None, "--cache-dir", envvar="KRESUME_CACHE_DIR",
                        help="Node-local cache (docs/preemption.md): copy the checkpoint from there when its entry "
                             "matches the manifest (id, sizes, CRC-32C), else download."),
                    result_file: Optional[Path] = typer.Option(
                        None, "--result-file",
                        help="Write the outcome as one JSON object here (source cache|store, checkpoint, bytes, "
                             "seconds): the restore init container's terminationMessagePath."),
                    ) -> None:
        """Download a committed checkpoint, verify sizes and CRC-32C, then rename it into place.

        Prints the local path. A half-finished restore never appears under DEST/<name>.
        """
        with _usage_checked():
            oneshot.restore(url, dest, storage_option, checkpoint, progress, rank, progress_every, cache_dir,
                            result_file)

    @app.command("prune")
    def prune_cmd(url: str = typer.Argument(..., help=_URL_HELP), storage_option: Optional[list[str]] = StorageOpt,
                  keep_last: int = typer.Option(..., "--keep-last", min=1,
                                                help="Keep the N newest valid (not bad-marked) checkpoints (≥ 1)."),
                  keep_every: Optional[int] = typer.Option(
                      None, "--keep-every", min=1, help="Also keep valid checkpoints whose step is a multiple of K."),
                  orphans_older_than: Optional[float] = typer.Option(
                      None, "--orphans-older-than", min=0, metavar="SECONDS",
                      help="Also delete uncommitted data and parts (interrupted commits, steps a rank never finished) "
                           "whose newest object is older than this by the store's own clock."),
                  dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, delete nothing.")) -> None:
        """Delete old checkpoints: manifest first, then data.

        Only valid checkpoints (not marked bad with `mark-bad`) count toward --keep-last and --keep-every.

        Never deleted: the newest valid checkpoint (what `latest` resolves to), the pointer's target,
        every checkpoint a live pin names (a running pod resumed from it), and one fallback older than
        latest (the newest verified one — a pod resumed from it and committed since — else the newest valid).

        Checkpoints marked bad are kept (reason "marked bad"); `kresume unmark-bad` undoes a mark.

        Prints one line per checkpoint (deleted/kept, id, why it is kept); exit 4 when the run has none.
        """
        store = _open(url, storage_option)
        plan = store.prune(keep_last, keep_every, dry_run=dry_run, orphans_older_than=orphans_older_than)
        if not plan.keep and not plan.delete:
            raise store.no_checkpoint("nothing to prune")
        verb = "would delete" if dry_run else "deleted"
        for cid in plan.delete:
            print(f"{verb}\t{cid}\t{plan.reasons.get(cid, '')}".rstrip())
        for cid in plan.keep:
            print(f"kept\t{cid}\t{plan.reasons.get(cid, '')}")

    @app.command("commit")
    def commit_cmd(path: Path = typer.Argument(..., help="Local checkpoint: a file or a folder."),
                   url: str = typer.Argument(..., help=_URL_HELP), storage_option: Optional[list[str]] = StorageOpt,
                   no_pointer: bool = typer.Option(False, "--no-pointer", help="Commit without moving latest.json."),
                   allow_unknown: bool = typer.Option(
                       False, "--allow-unknown",
                       help="Commit a file or folder whose format kresume does not recognise (format 'unknown', "
                            "no content check, no step from its content); without it that is refused (exit 10)."),
                   resumed_from: Optional[str] = typer.Option(
                       None, "--resumed-from", metavar="ID|URL",
                       help="The checkpoint this training resumed from (recorded; it makes that one the verified "
                            "fallback retention keeps)."),
                   progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                                           help="Progress bar (default: when stderr is a terminal).")
                   ) -> None:
        """Upload a local checkpoint and commit it (the same code path the sidecar uses).

        The content is checked first: a truncated torch file (zip or legacy torch.save), safetensors
        or JSON is refused (exit 10). A checkpoint of unknown format (neither a torch zip nor a legacy
        torch.save file, safetensors, an HF/DCP/DeepSpeed folder nor a folder with a
        .kresume-complete marker) holding a file no content check applies to is refused too
        unless --allow-unknown is given.

        Prints the committed checkpoint's URL and step.
        """
        from kresume.formats import checks
        from kresume.formats.metadata import describe
        from kresume.store.commit import check_content
        from kresume.store.local import snapshot

        store = _open(url, storage_option)
        show = sys.stderr.isatty() if progress is None else progress
        with snapshot(path) as captured:
            check_content(captured)
            info = describe(captured.path)
            unjudged = [f.relpath or captured.name for f in captured.files
                        if checks.check_file(f.fd, f.size, f.relpath.rsplit("/", 1)[-1] or captured.name) is None]
            if info.format == "unknown" and unjudged:
                named = ", ".join(unjudged[:3]) + (f" and {len(unjudged) - 3} more" if len(unjudged) > 3 else "")
                why = ("not a torch zip or legacy torch.save file, safetensors, an HF/DCP/DeepSpeed folder, nor a "
                       "folder with a .kresume-complete marker, and no content check applies to "
                       f"{named}, so kresume cannot tell whether it is complete")
                if not allow_unknown:
                    raise errors.SourceError(str(path), f"its format is unknown ({why})",
                                             fix="nothing was committed; pass --allow-unknown to commit it as format 'unknown'")
                err.print(f"warning: {path}: format unknown ({why}); committing it as format 'unknown'", soft_wrap=True)
            with _bar(captured.total_bytes, f"commit {captured.name}", show) as advance:
                manifest = store.commit(captured, info=info, progress=advance, move_pointer=not no_pointer,
                                        resumed_from=resumed_from)
        print(f"{store.checkpoint_url(manifest)}\tstep={'' if manifest.step is None else manifest.step}")

    @app.command("mark-bad")
    def mark_bad_cmd(url: str = typer.Argument(..., help=_URL_HELP),
                     checkpoint: str = typer.Argument(
                         ..., help="Checkpoint id, or a name only one committed checkpoint has (see `kresume ls`)."),
                     reason: str = typer.Option("marked by hand", "--reason", help="Recorded with the mark."),
                     storage_option: Optional[list[str]] = StorageOpt) -> None:
        """Mark a committed checkpoint bad: `latest` and the operator skip it from now on.

        CHECKPOINT is an id or a name, as for `restore -c`; a name several checkpoints share is refused (exit 2).
        """
        store = _open(url, storage_option)
        manifest = store.resolve_checkpoint(checkpoint, unique=True)
        moved = store.mark_bad(manifest.id, reason)
        print(f"marked bad\t{manifest.id}\t{manifest.name}")
        if moved:
            print(f"pointer\t{moved}\t(the newest valid checkpoint; it named the one marked bad)")


    @app.command("unmark-bad")
    def unmark_bad_cmd(url: str = typer.Argument(..., help=_URL_HELP),
                       checkpoint: str = typer.Argument(
                           ..., help="Checkpoint id, or a name only one committed checkpoint has (see `kresume ls`)."),
                       storage_option: Optional[list[str]] = StorageOpt) -> None:
        """Remove a bad mark (a mistaken `mark-bad`, or the operator's crash-loop mark once the cause is
        fixed): `latest` may pick the checkpoint again; the pointer moves to it when it is the newest valid.

        Exit 4 when the checkpoint is not marked bad.
        """
        store = _open(url, storage_option)
        manifest = store.resolve_checkpoint(checkpoint, unique=True)
        moved = store.unmark_bad(manifest.id)
        print(f"unmarked\t{manifest.id}\t{manifest.name}")
        if moved:
            print(f"pointer\t{moved}\t(the newest valid checkpoint again)")


def _has_pins(store: RunStore) -> bool:
    """Whether the run has any pin (one listing; the store clock is read only then)."""
    from kresume import contract

    return bool(store._ls_names(contract.PINS_DIR))


def _files_cell(m: Any) -> str:
    """``kresume ls``'s FILES cell: the count, and how many are aliases of objects stored elsewhere in the run."""
    n = sum(1 for f in m.files if f.alias)
    return f"{len(m.files)} ({n} alias{'es' * (n != 1)})" if n else str(len(m.files))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
