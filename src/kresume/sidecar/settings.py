"""Sidecar settings: one dataclass, every field with its unit, filled from flags and ``KRESUME_*`` env.

Env names the operator injects are in :mod:`kresume.contract` (``ENV_*``); the others below are
sidecar-only tuning knobs (``KRESUME_<FIELD>`` in upper case). :func:`from_env` is the only reader of
the sidecar's env (the CLI's options are flags only); flags win over env, env over defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kresume import contract
from kresume.sidecar.leaving import RESTART_POLICIES
from kresume.store import errors, layout
from kresume.store.urls import check_url

WATCH_MODES = ("auto", "inotify", "poll")
PARTS_ALL_RANKS = "all-ranks"
"""``KRESUME_PARTS`` value: every unit of a multi-rank run commits through per-rank parts."""


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the flag/env and the fix."""


@dataclass(frozen=True)
class SidecarSettings:
    """Everything the sidecar needs. Times are seconds, sizes bytes."""

    run_url: str = ""
    """The run's store URL (``s3://bucket/prefix/<ns>/<run>/``). Required. Env ``KRESUME_RUN_URL``."""

    watch: str = contract.DEFAULT_CHECKPOINT_DIR
    """Folder the trainer writes checkpoints into. Env ``KRESUME_WATCH``."""

    storage_options: Mapping[str, Any] = field(default_factory=dict)
    """fsspec options for ``run_url`` (JSON object in env ``KRESUME_STORAGE_OPTIONS``)."""

    include: tuple[str, ...] = ()
    """Globs of unit paths to commit (empty = every recognised checkpoint); env comma-separated."""

    exclude: tuple[str, ...] = ()
    """Globs of unit paths never to commit (wins over include); env comma-separated."""

    marker: str = ".kresume-complete"
    """Name of the file that declares any other folder complete (written last)."""

    watch_mode: str = "auto"
    """``inotify`` (watchdog events as hints), ``poll`` (rescans only, for NFS/FUSE/CIFS where
    inotify sees no remote writes), or ``auto`` (poll when /proc/mounts says network/FUSE)."""

    poll_seconds: float = 2.0
    """Rescan period in poll mode."""

    rescan_seconds: float = 30.0
    """Reconcile rescan period in inotify mode (events are only hints)."""

    recheck_seconds: float = 0.2
    """Rescan period while some unit is incomplete (close events are missed in new folders)."""

    settle_seconds: float = 10.0
    """Quiet time after which a file without a content rule counts as complete, and an unfinished
    zip counts as truncated (corrupt)."""

    concurrency: int = 2
    """Checkpoints uploaded at the same time (each uploads its files with the store's workers)."""

    max_inflight_bytes: int = 8 * 2**30
    """Bytes of checkpoints uploading at once; a single larger checkpoint still runs alone."""

    skip_superseded: bool = False
    """Drop (and cancel) an older checkpoint's upload as soon as a newer one is complete."""

    commit_attempts: int = 5
    """Tries of a whole commit after the store's own per-request retries gave up."""

    retry_base_seconds: float = 1.0
    """First delay between whole-commit tries; doubles, full jitter."""

    retry_max_seconds: float = 60.0
    """Ceiling of one delay between whole-commit tries."""

    grace_seconds: float = 25.0
    """After SIGTERM, keep committing this long (pod terminationGracePeriodSeconds minus a
    margin). Env ``KRESUME_GRACE_SECONDS``."""

    restart_policy: str = ""
    """The pod's ``restartPolicy`` (``Never``, ``OnFailure``, ``Always``), given by the webhook in legacy mode only
    (env ``KRESUME_RESTART_POLICY``): with ``Never`` the sidecar leaves once the trainer has exited, with
    ``OnFailure`` once it exited after a ``finished`` notice (:mod:`kresume.sidecar.leaving`); empty or ``Always``:
    it runs until SIGTERM."""

    leave_settle_seconds: float = 2.0
    """Seconds the trainer's lock must stay free (after it was seen held) before the sidecar leaves."""

    leave_grace_seconds: float = 600.0
    """After the trainer left: commit what is complete for at most this long, then exit 0 (a store that does not
    answer must not keep the pod alive). A SIGTERM meanwhile shortens it to ``grace_seconds``."""

    leave_parts_seconds: float = 60.0
    """Multi-rank, after the trainer left: wait at most this long (within ``leave_grace_seconds``) for the steps
    this rank recorded a part of to commit (the other ranks' parts may still be on their way)."""

    presence_seconds: float = 1.0
    """Period of the trainer-lock probe while the sidecar may leave on its own (``restart_policy`` set)."""

    keep_last: int | None = None
    """Remote retention after each commit: keep the newest N (None = never prune)."""

    keep_every: int | None = None
    """Remote retention: also keep every checkpoint whose step is a multiple of K."""

    cache_dir: str = ""
    """Node-local cache (a hostPath shared by the node's pods, docs/preemption.md "Node-local tier"): every
    committed checkpoint is also kept there (cloned, hard-linked or copied from the open files), so a
    replacement pod on this node restores from local disk. Empty = off. Env ``KRESUME_CACHE_DIR``."""

    cache_max_bytes: int = 20 * 2**30
    """Cap of the node-local cache, bytes: oldest entries are evicted first, never a run's newest; a checkpoint
    larger than the cap is not cached. Env ``KRESUME_CACHE_MAX_BYTES``."""

    delete_local_after_commit: bool = False
    """Delete local checkpoints once committed (never the newest one)."""

    metrics_port: int = 9465
    """Port of ``/metrics``, ``/healthz``, ``/readyz`` on 0.0.0.0 (0 = an ephemeral port,
    -1 = no server)."""

    metrics_host: str = "0.0.0.0"
    """Address the metrics server binds."""

    pod_name: str = ""
    """Recorded as the source pod in manifests. Env ``KRESUME_POD_NAME``."""

    pod_namespace: str = ""
    """Recorded in manifests. Env ``KRESUME_POD_NAMESPACE``."""

    pod_uid: str = ""
    """The pod's ``metadata.uid`` (env ``KRESUME_POD_UID``, legacy mode): a free trainer lock whose holder wrote
    this uid is this pod's trainer that already ended, even if no probe saw it held."""

    log_format: str = "auto"
    """``json``, ``text`` or ``auto`` (JSON when stderr is not a terminal)."""

    rank: int | None = None
    """This pod's rank in a multi-rank run (env ``KRESUME_RANK``, injected by the operator)."""

    world_size: int | None = None
    """Pods of the run (env ``KRESUME_WORLD_SIZE``). Above 1, sharded checkpoints (DCP, DeepSpeed) are
    committed as this rank's part of one checkpoint of every rank (docs/store-protocol.md)."""

    epoch: str = ""
    """The resume-epoch token every rank of one restart shares (env ``KRESUME_EPOCH``, from the
    operator); it names the multi-rank checkpoint ids. Required when ``world_size`` > 1."""

    parts: str = ""
    """``all-ranks``: every checkpoint of a multi-rank run goes through per-rank parts and commits
    when every rank has recorded one (env ``KRESUME_PARTS``, from ``kresume.dev/parts``); empty:
    only sharded formats do."""

    resume_from: str = ""
    """The checkpoint this pod resumed from (env ``KRESUME_RESUME_FROM``); recorded as
    ``source.resumed_from`` of what this pod commits."""

    @property
    def multi_rank(self) -> bool:
        """True in a run of more than one pod (``world_size`` > 1)."""
        return self.world_size is not None and self.world_size > 1

    def validate(self) -> SidecarSettings:
        """Raise :class:`SettingsError` naming the flag and env of the first bad value."""
        if not self.run_url:
            raise SettingsError("--run-url / KRESUME_RUN_URL is required (e.g. s3://bucket/prefix/ns/run/)")
        try:
            check_url(self.run_url)
        except errors.BadURL as exc:
            raise SettingsError(f"--run-url / KRESUME_RUN_URL: {exc}") from None
        if self.watch_mode not in WATCH_MODES:
            raise SettingsError(f"--watch-mode must be one of {WATCH_MODES}, got {self.watch_mode!r}")
        for name in ("concurrency", "commit_attempts"):
            if getattr(self, name) < 1:
                raise SettingsError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        for name in ("keep_last", "keep_every"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SettingsError(f"--{name.replace('_', '-')} must be ≥ 1, got {v}")
        if self.cache_dir and not self.cache_dir.startswith("/"):
            raise SettingsError(f"--cache-dir / KRESUME_CACHE_DIR must be an absolute path, got {self.cache_dir!r}")
        if self.cache_max_bytes < 1:
            raise SettingsError(f"--cache-max-bytes must be ≥ 1, got {self.cache_max_bytes}")
        if self.grace_seconds < 0:
            raise SettingsError(f"--grace-seconds must be ≥ 0, got {self.grace_seconds}")
        if self.restart_policy not in ("", *RESTART_POLICIES):
            raise SettingsError(f"--restart-policy / {contract.ENV_RESTART_POLICY} must be one of "
                                f"{', '.join(RESTART_POLICIES)} (the pod's restartPolicy) or empty, "
                                f"got {self.restart_policy!r}")
        for name in ("leave_settle_seconds", "leave_grace_seconds", "leave_parts_seconds"):
            if getattr(self, name) < 0:
                raise SettingsError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")
        if self.presence_seconds <= 0:
            raise SettingsError(f"--presence-seconds must be > 0, got {self.presence_seconds}")
        self._validate_ranks()
        return self

    def _validate_ranks(self) -> None:
        if self.parts not in ("", PARTS_ALL_RANKS):
            raise SettingsError(f"KRESUME_PARTS must be {PARTS_ALL_RANKS!r} or empty, got {self.parts!r} "
                                f"(the pod annotation {contract.ANN_PARTS})")
        if self.world_size is not None and self.world_size < 1:
            raise SettingsError(f"KRESUME_WORLD_SIZE must be ≥ 1, got {self.world_size}")
        if not self.multi_rank:
            return
        if self.rank is None or not 0 <= self.rank < self.world_size:  # type: ignore[operator]
            raise SettingsError(f"KRESUME_RANK must be an integer in 0..{self.world_size - 1} with "  # type: ignore[operator]
                                f"KRESUME_WORLD_SIZE={self.world_size}, got {self.rank!r} (the operator injects both)")
        try:
            layout.check_epoch_token(self.epoch)
        except ValueError as exc:
            raise SettingsError(f"{exc}; required with KRESUME_WORLD_SIZE > 1, the same on every rank") from None


def env_name(field_name: str) -> str:
    """``KRESUME_<FIELD>`` for a settings field."""
    return "KRESUME_" + field_name.upper()


def parse_value(name: str, raw: str, current: Any) -> Any:
    """Convert an env string to the type of the field's default; raises :class:`SettingsError`."""
    try:
        if name == "storage_options":
            v = json.loads(raw) if raw.strip() else {}
            if not isinstance(v, dict):
                raise ValueError("not a JSON object")
            return v
        if name in ("include", "exclude"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("not a boolean (true/false)")
        if name in ("keep_last", "keep_every", "rank", "world_size"):
            return int(raw) if raw.strip() else None
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{env_name(name)}={raw!r}: {exc}") from exc


def from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> SidecarSettings:
    """Settings from ``KRESUME_*`` env (``os.environ`` by default), then ``overrides`` (flags;
    ``None`` values are ignored). Not validated: call :meth:`SidecarSettings.validate`."""
    env = os.environ if env is None else env
    base = SidecarSettings()
    values: dict[str, Any] = {}
    for f in fields(SidecarSettings):
        key = env_name(f.name)
        if key in env:
            values[f.name] = parse_value(f.name, env[key], getattr(base, f.name))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SidecarSettings(**values)
