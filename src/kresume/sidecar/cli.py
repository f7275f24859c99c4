"""``kresume sidecar``: the CLI over :class:`kresume.sidecar.service.Sidecar`.

Mount in the main CLI with ``app.command("sidecar")(kresume.sidecar.cli.command)``; standalone it is
``python -m kresume.sidecar``. Every option also reads a ``KRESUME_*`` env variable (shown in
``--help``); flags win over env, env over defaults.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from kresume.sidecar import logs
from kresume.sidecar.settings import SettingsError, SidecarSettings, from_env

_D = SidecarSettings()


def command(
    watch: Optional[str] = typer.Option(None, "--watch", envvar="KRESUME_WATCH", show_envvar=True,
                                        help=f"Folder the trainer writes checkpoints into (default: {_D.watch})."),
    run_url: Optional[str] = typer.Option(None, "--run-url", envvar="KRESUME_RUN_URL", show_envvar=True,
                                          help="The run's store URL, e.g. s3://bucket/prefix/ns/run/ (required)."),
    storage_options: Optional[str] = typer.Option(
        None, "--storage-options", envvar="KRESUME_STORAGE_OPTIONS", show_envvar=True,
        help='fsspec storage options as a JSON object, e.g. \'{"endpoint_url": "http://minio:9000"}\'.'),
    include: Optional[list[str]] = typer.Option(
        None, "--include", help="Glob of checkpoint paths to commit (repeatable; env KRESUME_INCLUDE, comma-"
                                "separated). Also makes matching files of unknown type checkpoints."),
    exclude: Optional[list[str]] = typer.Option(
        None, "--exclude", help="Glob of checkpoint paths never to commit (repeatable; env KRESUME_EXCLUDE)."),
    marker: Optional[str] = typer.Option(None, "--marker", envvar="KRESUME_MARKER",
                                         help=f"File name that marks any other folder complete (default: {_D.marker})."),
    watch_mode: Optional[str] = typer.Option(
        None, "--watch-mode", envvar="KRESUME_WATCH_MODE",
        help="auto | inotify | poll. auto polls on NFS/FUSE/CIFS volumes (from /proc/mounts) (default: auto)."),
    poll_seconds: Optional[float] = typer.Option(None, "--poll-seconds", envvar="KRESUME_POLL_SECONDS",
                                                 help=f"Rescan period in poll mode, seconds (default: {_D.poll_seconds})."),
    rescan_seconds: Optional[float] = typer.Option(
        None, "--rescan-seconds", envvar="KRESUME_RESCAN_SECONDS",
        help=f"Reconcile rescan period in inotify mode, seconds (default: {_D.rescan_seconds})."),
    settle_seconds: Optional[float] = typer.Option(
        None, "--settle-seconds", envvar="KRESUME_SETTLE_SECONDS",
        help="Seconds a file without a content check must stay unmodified to count as complete; also when an "
             f"unfinished zip counts as truncated (default: {_D.settle_seconds})."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", envvar="KRESUME_CONCURRENCY",
                                              help=f"Checkpoints uploaded at once (default: {_D.concurrency})."),
    max_inflight_bytes: Optional[int] = typer.Option(
        None, "--max-inflight-bytes", envvar="KRESUME_MAX_INFLIGHT_BYTES",
        help=f"Bytes of checkpoints uploading at once; one larger checkpoint still runs alone "
             f"(default: {_D.max_inflight_bytes})."),
    skip_superseded: Optional[bool] = typer.Option(
        None, "--skip-superseded/--no-skip-superseded", envvar="KRESUME_SKIP_SUPERSEDED",
        help="Drop an older checkpoint's upload once a newer one is complete (default: off)."),
    commit_attempts: Optional[int] = typer.Option(
        None, "--commit-attempts", envvar="KRESUME_COMMIT_ATTEMPTS",
        help=f"Tries of a whole commit after the store's own retries gave up (default: {_D.commit_attempts})."),
    grace_seconds: Optional[float] = typer.Option(
        None, "--grace-seconds", envvar="KRESUME_GRACE_SECONDS", show_envvar=True,
        help="Seconds to keep committing after SIGTERM (the pod's terminationGracePeriodSeconds minus a margin) "
             f"(default: {_D.grace_seconds})."),
    keep_last: Optional[int] = typer.Option(None, "--keep-last", envvar="KRESUME_KEEP_LAST",
                                            help="Remote retention after each commit: keep the newest N (default: keep all)."),
    keep_every: Optional[int] = typer.Option(None, "--keep-every", envvar="KRESUME_KEEP_EVERY",
                                             help="Remote retention: also keep checkpoints whose step is a multiple of K."),
    delete_local_after_commit: Optional[bool] = typer.Option(
        None, "--delete-local-after-commit/--keep-local", envvar="KRESUME_DELETE_LOCAL_AFTER_COMMIT",
        help="Delete local checkpoints once committed, never the newest (default: keep)."),
    metrics_port: Optional[int] = typer.Option(
        None, "--metrics-port", envvar="KRESUME_METRICS_PORT",
        help=f"TCP port of /metrics, /healthz, /readyz (0 = ephemeral, -1 = off) (default: {_D.metrics_port})."),
    pod_name: Optional[str] = typer.Option(None, "--pod-name", envvar="KRESUME_POD_NAME",
                                           help="Source pod recorded in manifests (downward API)."),
    pod_namespace: Optional[str] = typer.Option(None, "--pod-namespace", envvar="KRESUME_POD_NAMESPACE",
                                                help="Source namespace recorded in manifests."),
    log_format: Optional[str] = typer.Option(None, "--log-format", envvar="KRESUME_LOG_FORMAT",
                                             help="json | text | auto (JSON when stderr is not a terminal)."),
) -> None:
    """Watch a checkpoint folder and commit every complete checkpoint to the run's store.

    Exit codes: 0 after SIGTERM/SIGINT (prints one summary line: committed, abandoned, bytes),
    2 for bad settings or a missing watch folder.
    """
    from kresume.sidecar.service import Sidecar

    try:
        opts = json.loads(storage_options) if storage_options else None
        if opts is not None and not isinstance(opts, dict):
            raise SettingsError("--storage-options / KRESUME_STORAGE_OPTIONS must be a JSON object")
        settings = from_env(
            watch=watch, run_url=run_url, storage_options=opts, include=tuple(include) if include else None,
            exclude=tuple(exclude) if exclude else None, marker=marker, watch_mode=watch_mode,
            poll_seconds=poll_seconds, rescan_seconds=rescan_seconds, settle_seconds=settle_seconds,
            concurrency=concurrency, max_inflight_bytes=max_inflight_bytes, skip_superseded=skip_superseded,
            commit_attempts=commit_attempts, grace_seconds=grace_seconds, keep_last=keep_last,
            keep_every=keep_every, delete_local_after_commit=delete_local_after_commit,
            metrics_port=metrics_port, pod_name=pod_name, pod_namespace=pod_namespace, log_format=log_format,
        ).validate()
    except (SettingsError, ValueError) as exc:
        typer.echo(f"kresume sidecar: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.setup(settings.log_format)
    raise typer.Exit(Sidecar(settings).run())


app = typer.Typer(add_completion=False, help="kresume sidecar")
app.command()(command)


def main() -> None:
    """Entry point of ``python -m kresume.sidecar``."""
    app()
