"""``kresume sidecar``: the CLI over :class:`kresume.sidecar.service.Sidecar`.

Mount in the main CLI with ``app.command("sidecar")(kresume.sidecar.cli.command)``; standalone it is
``python -m kresume.sidecar``. Every option has a ``KRESUME_<FIELD>`` env variable (shown in
``--help``). Env is read in one place, :func:`kresume.sidecar.settings.from_env`; the options here
carry only flags (typer does not read env), and flags win over env, env over defaults.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from kresume.sidecar import logs
from kresume.sidecar.settings import SettingsError, SidecarSettings, env_name, from_env

_D = SidecarSettings()


def _opt(field: str, *decls: str, help: str) -> Any:  # noqa: A002 - typer's keyword
    """A flag-only option for settings field ``field``; its help names the env variable."""
    return typer.Option(None, *decls, help=f"{help} (env: {env_name(field)})")


def command(
    watch: Optional[str] = _opt("watch", "--watch", help=f"Folder the trainer writes checkpoints into (default: {_D.watch})."),
    run_url: Optional[str] = _opt("run_url", "--run-url",
                                  help="The run's store URL, e.g. s3://bucket/prefix/ns/run/ (required)."),
    storage_options: Optional[str] = _opt(
        "storage_options", "--storage-options",
        help='fsspec storage options as a JSON object, e.g. \'{"endpoint_url": "http://minio:9000"}\'.'),
    include: Optional[list[str]] = _opt(
        "include", "--include", help="Glob of checkpoint paths to commit (repeatable; in env comma-separated). "
                                     "Also makes matching files of unknown type checkpoints."),
    exclude: Optional[list[str]] = _opt(
        "exclude", "--exclude", help="Glob of checkpoint paths never to commit (repeatable; in env comma-separated)."),
    marker: Optional[str] = _opt("marker", "--marker",
                                 help=f"File name that marks any other folder complete (default: {_D.marker})."),
    watch_mode: Optional[str] = _opt(
        "watch_mode", "--watch-mode",
        help="auto | inotify | poll. auto polls on NFS/FUSE/CIFS volumes (from /proc/mounts) (default: auto)."),
    poll_seconds: Optional[float] = _opt("poll_seconds", "--poll-seconds",
                                         help=f"Rescan period in poll mode, seconds (default: {_D.poll_seconds})."),
    rescan_seconds: Optional[float] = _opt(
        "rescan_seconds", "--rescan-seconds",
        help=f"Reconcile rescan period in inotify mode, seconds (default: {_D.rescan_seconds})."),
    settle_seconds: Optional[float] = _opt(
        "settle_seconds", "--settle-seconds",
        help="Seconds a file without a content check must stay unmodified to count as complete; also when an "
             f"unfinished zip counts as truncated (default: {_D.settle_seconds})."),
    concurrency: Optional[int] = _opt("concurrency", "--concurrency",
                                      help=f"Checkpoints uploaded at once (default: {_D.concurrency})."),
    max_inflight_bytes: Optional[int] = _opt(
        "max_inflight_bytes", "--max-inflight-bytes",
        help=f"Bytes of checkpoints uploading at once; one larger checkpoint still runs alone "
             f"(default: {_D.max_inflight_bytes})."),
    skip_superseded: Optional[bool] = _opt(
        "skip_superseded", "--skip-superseded/--no-skip-superseded",
        help="Drop an older checkpoint's upload once a newer one is complete (default: off)."),
    commit_attempts: Optional[int] = _opt(
        "commit_attempts", "--commit-attempts",
        help=f"Tries of a whole commit after the store's own retries gave up (default: {_D.commit_attempts})."),
    grace_seconds: Optional[float] = _opt(
        "grace_seconds", "--grace-seconds",
        help="Seconds to keep committing after SIGTERM (the pod's terminationGracePeriodSeconds minus a margin) "
             f"(default: {_D.grace_seconds})."),
    restart_policy: Optional[str] = _opt(
        "restart_policy", "--restart-policy",
        help="The pod's restartPolicy, set by the webhook in legacy mode: Never = leave (commit, exit 0) once the "
             "trainer exited; OnFailure = once it exited after a 'finished' notice; Always or empty = run until "
             "SIGTERM (default: empty)."),
    leave_settle_seconds: Optional[float] = _opt(
        "leave_settle_seconds", "--leave-settle-seconds",
        help=f"Seconds the trainer's lock must stay free before leaving (default: {_D.leave_settle_seconds})."),
    leave_grace_seconds: Optional[float] = _opt(
        "leave_grace_seconds", "--leave-grace-seconds",
        help=f"After the trainer left: commit for at most this long, then exit 0 (default: {_D.leave_grace_seconds})."),
    leave_parts_seconds: Optional[float] = _opt(
        "leave_parts_seconds", "--leave-parts-seconds",
        help="Multi-rank, after the trainer left: wait at most this long for this rank's recorded steps to commit "
             f"(default: {_D.leave_parts_seconds})."),
    presence_seconds: Optional[float] = _opt(
        "presence_seconds", "--presence-seconds",
        help=f"Trainer-lock probe period while the sidecar may leave, seconds (default: {_D.presence_seconds})."),
    keep_last: Optional[int] = _opt("keep_last", "--keep-last",
                                    help="Remote retention after each commit: keep the newest N (default: keep all)."),
    keep_every: Optional[int] = _opt("keep_every", "--keep-every",
                                     help="Remote retention: also keep checkpoints whose step is a multiple of K."),
    cache_dir: Optional[str] = _opt(
        "cache_dir", "--cache-dir",
        help="Node-local cache folder (a hostPath): keep every committed checkpoint there too (default: off)."),
    cache_max_bytes: Optional[int] = _opt(
        "cache_max_bytes", "--cache-max-bytes",
        help=f"Cap of the node-local cache, bytes; oldest first, never a run's newest (default: {_D.cache_max_bytes})."),
    delete_local_after_commit: Optional[bool] = _opt(
        "delete_local_after_commit", "--delete-local-after-commit/--keep-local",
        help="Delete local checkpoints once committed, never the newest (default: keep)."),
    metrics_port: Optional[int] = _opt(
        "metrics_port", "--metrics-port",
        help=f"TCP port of /metrics, /healthz, /readyz (0 = ephemeral, -1 = off) (default: {_D.metrics_port})."),
    pod_name: Optional[str] = _opt("pod_name", "--pod-name", help="Source pod recorded in manifests (downward API)."),
    pod_namespace: Optional[str] = _opt("pod_namespace", "--pod-namespace",
                                        help="Source namespace recorded in manifests."),
    log_format: Optional[str] = _opt("log_format", "--log-format",
                                     help="json | text | auto (JSON when stderr is not a terminal)."),
    rank: Optional[int] = _opt("rank", "--rank", help="This pod's rank in a multi-rank run (injected by the operator)."),
    world_size: Optional[int] = _opt(
        "world_size", "--world-size",
        help="Pods of the run; above 1 sharded checkpoints (DCP, DeepSpeed) commit as this rank's part."),
    epoch: Optional[str] = _opt("epoch", "--epoch",
                                help="Resume-epoch token shared by every rank of one restart (injected)."),
    parts: Optional[str] = _opt("parts", "--parts",
                                help="all-ranks: every checkpoint goes through per-rank parts (default: sharded only)."),
    resume_from: Optional[str] = _opt("resume_from", "--resume-from",
                                      help="The checkpoint this pod resumed from (recorded in what it commits)."),
) -> None:
    """Watch a checkpoint folder and commit every complete checkpoint to the run's store.

    Exit codes: 0 after SIGTERM/SIGINT, or after the trainer left (legacy mode, --restart-policy) (prints one
    summary line: committed, abandoned, bytes),
    2 for bad settings or a missing watch folder.
    """
    from kresume.sidecar.service import Sidecar
    from kresume.store.deadline import exit_now

    try:
        opts = json.loads(storage_options) if storage_options else None
        if opts is not None and not isinstance(opts, dict):
            raise SettingsError("--storage-options must be a JSON object")
        settings = from_env(
            watch=watch, run_url=run_url, storage_options=opts, include=tuple(include) if include else None,
            exclude=tuple(exclude) if exclude else None, marker=marker, watch_mode=watch_mode,
            poll_seconds=poll_seconds, rescan_seconds=rescan_seconds, settle_seconds=settle_seconds,
            concurrency=concurrency, max_inflight_bytes=max_inflight_bytes, skip_superseded=skip_superseded,
            commit_attempts=commit_attempts, grace_seconds=grace_seconds, restart_policy=restart_policy,
            leave_settle_seconds=leave_settle_seconds, leave_grace_seconds=leave_grace_seconds,
            leave_parts_seconds=leave_parts_seconds, presence_seconds=presence_seconds, keep_last=keep_last,
            keep_every=keep_every, delete_local_after_commit=delete_local_after_commit, cache_dir=cache_dir,
            cache_max_bytes=cache_max_bytes,
            metrics_port=metrics_port, pod_name=pod_name, pod_namespace=pod_namespace, log_format=log_format,
            rank=rank, world_size=world_size, epoch=epoch, parts=parts, resume_from=resume_from,
        ).validate()
    except (SettingsError, ValueError) as exc:
        typer.echo(f"kresume sidecar: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.setup(settings.log_format)
    exit_now(Sidecar(settings).run())  # no interpreter teardown: it would join upload threads still blocked


app = typer.Typer(add_completion=False, help="kresume sidecar")
app.command()(command)


def main() -> None:
    """Entry point of ``python -m kresume.sidecar``."""
    app()
