"""Training-side helper: what to pass to Lightning's ``ckpt_path`` or HF's ``resume_from_checkpoint``.

Usage (Lightning)::

    from kresume import resume_from
    trainer.fit(model, ckpt_path=resume_from())

The trainer needs no other kresume code: under the operator the injected environment names the
checkpoint of the pod's admission, and the run's store says whether a newer one was committed since
(issue 11 item 9: with ``restartPolicy: OnFailure`` or ``Always`` the kubelet restarts a crashed
trainer inside the same pod, whose env still names the checkpoint of the pod's admission, while its
sidecar has committed newer ones). Without the operator the store is the only source.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kresume import contract, preemption

ENV_RESUME_TIMEOUT = "KRESUME_RESUME_TIMEOUT"
#: Seconds ``resume_from`` may spend reading the run's store before it answers with the injected
#: value (a trainer start must not wait on a store that does not answer; the CLI's is 30 s).
DEFAULT_TIMEOUT = 10.0
ENV_WORLD_SIZE = "KRESUME_WORLD_SIZE"


@dataclass(frozen=True)
class _Latest:
    """What the store said: the newest valid checkpoint (``None``: none), and whether the injected one is bad."""

    resolved: Any
    injected_bad: bool


def resume_from(
    run_url: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    local: bool | None = None,
    timeout: float | None = None,
) -> str | None:
    """Return the checkpoint to resume from, or ``None`` for a fresh start.

    The newest of these wins (checkpoint ids order by step, then commit time):

    1. the injected checkpoint: ``KRESUME_RESUME_FROM`` (the URL the operator's webhook injected at
       the pod's admission), or its local copy ``KRESUME_RESUME_PATH`` made by the restore step;
    2. the run's committed latest, read from ``run_url`` / ``KRESUME_RUN_URL`` within ``timeout``
       seconds (the store protocol's ``latest``: the newest valid manifest, never a bad-marked one);
       this includes checkpoints this pod's own sidecar committed after the pod started, which a
       trainer restarted inside the pod must not redo. Its local copy in ``KRESUME_CHECKPOINT_DIR``
       (the file or folder the sidecar committed, unchanged) is used where a path is wanted.

    When the store cannot be read within ``timeout`` (or no run URL is configured) the injected value
    is returned. An injected checkpoint the store reports bad-marked is skipped.

    With ``KRESUME_CHECKPOINT_DIR`` set (the operator injects it) the calling process also takes the
    trainer lock there for the rest of its life (:func:`kresume.preemption.hold_for_life`): a legacy-mode
    sidecar then knows when the trainer has exited (docs/preemption.md "When the trainer ends").

    Multi-rank (docs/store-protocol.md "Resume epochs"): with ``KRESUME_WORLD_SIZE`` > 1 every rank
    must load the same checkpoint, so the injected value is returned as is — unless
    ``torch.distributed`` is initialised: then rank 0 decides as above and broadcasts its answer
    (``broadcast_object_list``); every rank returns it.

    Parameters
    ----------
    run_url : str, optional
        The run's store URL (``s3://bucket/prefix/ns/run/``); defaults to ``KRESUME_RUN_URL``.
    storage_options : mapping, optional
        fsspec storage options for ``run_url``; default the JSON object in ``KRESUME_STORAGE_OPTIONS``
        (the sidecar's); fsspec config files and ``FSSPEC_*`` env apply too.
    local : bool, optional
        ``True`` requires a local path (HF ``Trainer``): the restored copy, or the local copy of a
        newer committed checkpoint, else ``None``; ``False`` returns URLs only; ``None`` (default)
        prefers a local path when one holds the chosen checkpoint.
    timeout : float, optional
        Seconds for reading the store (default ``KRESUME_RESUME_TIMEOUT`` or 10).

    Returns
    -------
    str or None
        A URL (``s3://…/epoch=3-step=400.ckpt``) or local path; ``None`` when there is nothing to resume.

    Raises
    ------
    kresume.store.errors.StoreError
        Only when nothing was injected and reading the run's store fails (credentials, bucket
        missing, unreachable within the budget); with an injected value this never raises.
    """
    if os.environ.get(contract.ENV_CHECKPOINT_DIR):
        preemption.hold_for_life()  # the sidecar sees this trainer until the process ends (docs/preemption.md)
    world = _int_env(ENV_WORLD_SIZE)
    if world is not None and world > 1:
        dist = _initialised_dist()
        if dist is None:
            return _injected_answer(local)
        answer: list[Any] = [None]
        failure: Exception | None = None
        if dist.get_rank() == 0:
            try:
                answer[0] = ("ok", _decide(run_url, storage_options, local, timeout))
            except Exception as exc:  # noqa: BLE001 - every rank must learn it, or the others wait forever
                failure, answer[0] = exc, ("error", str(exc))
        dist.broadcast_object_list(answer, src=0)
        kind, value = answer[0]
        if failure is not None:
            raise failure
        if kind == "error":
            from kresume.store import errors

            raise errors.StoreError(os.environ.get(contract.ENV_RUN_URL, ""), f"rank 0 could not decide: {value}")
        return value
    return _decide(run_url, storage_options, local, timeout)


def _decide(run_url: str | None, storage_options: Mapping[str, Any] | None, local: bool | None,
            timeout: float | None) -> str | None:
    """The single-process decision of :func:`resume_from` (see there for the order)."""
    from kresume.store import errors

    injected = os.environ.get(contract.ENV_RESUME_FROM) or None
    url = run_url or os.environ.get(contract.ENV_RUN_URL)
    if not url:
        return _injected_answer(local)
    try:
        latest = _read_latest(url, storage_options, injected, timeout)
    except errors.StoreError as exc:
        if not injected and not os.environ.get(contract.ENV_RESUME_PATH):
            raise
        warnings.warn(f"kresume: could not read the run's latest checkpoint ({exc}); resuming from the injected "
                      f"{injected or os.environ.get(contract.ENV_RESUME_PATH)}", RuntimeWarning, stacklevel=3)
        return _injected_answer(local)
    resolved = latest.resolved
    if injected and not latest.injected_bad and (resolved is None or not _newer(resolved, injected)):
        if resolved is None:
            warnings.warn(f"kresume: the run's store lists no valid checkpoint at {url}; resuming from the injected "
                          f"{injected}", RuntimeWarning, stacklevel=3)
        return _injected_answer(local)
    if resolved is None:
        return None  # the injected one is marked bad and nothing else is valid
    path = _local_copy(resolved.manifest)
    if local is True:
        if path is not None:
            return path
        restored = os.environ.get(contract.ENV_RESUME_PATH)
        if restored and not latest.injected_bad:
            warnings.warn(f"kresume: {resolved.url} is newer than the restored copy, but has no local copy; "
                          f"resuming from {restored}", RuntimeWarning, stacklevel=3)
            return restored
        return None
    if local is None and path is not None:
        return path
    return str(resolved.url)


def _injected_answer(local: bool | None) -> str | None:
    """The injected value alone (what the pod was admitted with)."""
    path = os.environ.get(contract.ENV_RESUME_PATH)
    if local is not False and path:
        return path
    if local is True:
        if os.environ.get(contract.ENV_RESUME_FROM):
            warnings.warn(
                f"kresume: a committed checkpoint exists ({os.environ[contract.ENV_RESUME_FROM]}) but there is no "
                f"local copy ({contract.ENV_RESUME_PATH} is unset): set the pod annotation "
                f'{contract.ANN_RESTORE}: "true" so the operator restores it before the trainer starts',
                RuntimeWarning, stacklevel=4)
        return None
    return os.environ.get(contract.ENV_RESUME_FROM) or None


def _read_latest(url: str, storage_options: Mapping[str, Any] | None, injected: str | None,
                 timeout: float | None) -> _Latest:
    """The run's latest (and whether ``injected`` is bad-marked), within the budget.

    Two bounds: the store's requests carry a :class:`~kresume.store.deadline.Deadline` (cancelled
    when it passes), and the read runs on a daemon thread the caller stops waiting for one second
    after the budget (a call no deadline can cancel — a hung NFS mount behind ``file://`` — cannot
    hold the trainer). Raises ``StoreUnreachable`` when the budget is spent.
    """
    import json
    import time

    from kresume.store import errors
    from kresume.store.deadline import Deadline
    from kresume.store.runstore import RunStore
    from kresume.store.storage import TransferSettings

    budget = timeout if timeout is not None else float(os.environ.get(ENV_RESUME_TIMEOUT) or DEFAULT_TIMEOUT)
    if storage_options is None and os.environ.get(contract.ENV_STORAGE_OPTIONS):
        try:
            storage_options = json.loads(os.environ[contract.ENV_STORAGE_OPTIONS])
        except ValueError as exc:
            raise errors.BadOption(url, f"{contract.ENV_STORAGE_OPTIONS} is not JSON: {exc}",
                                   fix="set it to a JSON object, or pass storage_options=") from exc
    deadline = Deadline(f"resume_from's budget ({ENV_RESUME_TIMEOUT}={budget:g} s)")
    deadline.set(time.monotonic() + budget)
    store = RunStore.open(url, storage_options, TransferSettings(attempts=3, deadline=deadline))
    injected_id = _checkpoint_id(injected) if injected else None
    out: list[Any] = []

    def read() -> None:
        try:
            resolved = store.latest()
            bad = bool(injected_id) and (resolved is None or resolved.checkpoint_id != injected_id) \
                and store.is_bad(injected_id)  # type: ignore[arg-type]
            out.append(_Latest(resolved, bad))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            out.append(exc)

    worker = threading.Thread(target=read, name="kresume-resume-from", daemon=True)
    worker.start()
    worker.join(budget + 1.0)
    if not out:
        raise errors.StoreUnreachable(url, f"no answer within {budget:g} s ({ENV_RESUME_TIMEOUT})")
    if isinstance(out[0], BaseException):
        if isinstance(out[0], errors.StoreError):
            raise out[0]
        raise errors.StoreError(url, f"{type(out[0]).__name__}: {out[0]}") from out[0]
    return out[0]


def _checkpoint_id(url: str) -> str | None:
    """The checkpoint id in a resume URL (``…/checkpoints/<id>/<name>``), else ``None``."""
    parts = url.rstrip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part == contract.CHECKPOINTS_DIR:
            return parts[i + 1]
    return None


def _newer(resolved: Any, injected: str) -> bool:
    """Is the store's latest newer than the injected checkpoint? By id order (step, commit time);
    by step when an id does not parse; an unknown injected checkpoint counts as older."""
    from kresume.store import layout

    mine = _checkpoint_id(injected)
    if mine == resolved.checkpoint_id:
        return False
    a, b = layout.parse_checkpoint_id(resolved.checkpoint_id), layout.parse_checkpoint_id(mine or "")
    if a is not None and b is not None:
        return a > b
    step = _int_env(contract.ENV_RESUME_STEP)
    return step is None or (resolved.step is not None and resolved.step > step)


def _local_copy(manifest: Any) -> str | None:
    """The path of ``manifest``'s checkpoint in ``KRESUME_CHECKPOINT_DIR`` when the local file or
    folder still holds exactly the committed files (names, sizes, and the newest mtime the sidecar
    recorded), else ``None``."""
    root = os.environ.get(contract.ENV_CHECKPOINT_DIR)
    rel = manifest.source.get("unit") if isinstance(manifest.source, dict) else None
    mtime = manifest.source.get("mtime_ns") if isinstance(manifest.source, dict) else None
    if not root or not isinstance(rel, str) or not rel or ".." in rel.split("/") or rel.startswith("/"):
        return None
    path = Path(root) / rel
    try:
        if manifest.kind == "file":
            st = path.stat()
            files = {"": st} if path.is_file() else {}
        else:
            files = {str(p.relative_to(path)).replace(os.sep, "/"): p.stat()
                     for p in path.rglob("*") if p.is_file() and not p.is_symlink()}
    except OSError:
        return None
    want = {f.path: f.size for f in manifest.files}
    if {k: st.st_size for k, st in files.items()} != want:
        return None
    if isinstance(mtime, int) and max((st.st_mtime_ns for st in files.values()), default=0) != mtime:
        return None
    return str(path)


def _int_env(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def _initialised_dist() -> Any:
    """``torch.distributed`` when it is imported, available and initialised, else ``None`` (never
    imports torch itself)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dist = getattr(torch, "distributed", None)
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist
