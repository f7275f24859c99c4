"""Parse the pod's ``kresume.dev/*`` annotations into :class:`PodOptions` (DESIGN.md "Pod API")."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from kresume import contract
from kresume.injection.params import InjectionError

#: ``kresume.dev/parts`` values (docs/store-protocol.md "Which units go through parts").
PARTS_MODES = ("all-ranks",)
#: Longest accepted checkpoint dir (Linux PATH_MAX is 4096; a mount path far shorter is sane).
MAX_DIR_LEN = 1024


@dataclass(frozen=True)
class PodOptions:
    """What the pod's annotations ask for.

    checkpoint_dir : str — absolute, normalised path (default ``/checkpoints``).
    dir_explicit : bool — True when ``kresume.dev/checkpoint-dir`` was set.
    volume : str or None — ``kresume.dev/volume``: a pod volume to use instead of an emptyDir.
    containers : tuple of str — the training containers that get the env, in pod order.
    restore : bool — ``kresume.dev/restore: "true"`` or the policy's ``restore``.
    parts : str or None — ``kresume.dev/parts`` (``all-ranks``: every unit of a multi-rank run goes through
        per-rank parts; docs/store-protocol.md).
    """

    checkpoint_dir: str
    dir_explicit: bool
    volume: str | None
    containers: tuple[str, ...]
    restore: bool
    parts: str | None = None


def _bool(value: str, key: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise InjectionError("InvalidAnnotation", f"annotation {key}: {value!r} is not true or false")


def check_dir(path: str, key: str = contract.ANN_CHECKPOINT_DIR) -> str:
    """Return ``path`` if it is an absolute, normalised, non-root mount path; else raise.

    Raises
    ------
    InjectionError
        ``reason="InvalidAnnotation"``, naming ``key`` and the rule broken.
    """
    if (
        not path.startswith("/")
        or path == "/"
        or posixpath.normpath(path) != path
        or ".." in path.split("/")
        or ":" in path
        or len(path) > MAX_DIR_LEN
        or any(c.isspace() or ord(c) < 32 for c in path)
    ):
        raise InjectionError(
            "InvalidAnnotation",
            f"annotation {key}: {path!r} must be an absolute, normalised path other than '/' "
            "(no '..', ':', whitespace or trailing '/'), e.g. /checkpoints",
        )
    return path


def parse_options(pod: dict[str, Any], *, policy_restore: bool) -> PodOptions:
    """Read the annotations of ``pod``; ``policy_restore`` is the policy's ``restore`` default.

    Raises
    ------
    InjectionError
        For an invalid checkpoint dir, an unknown ``kresume.dev/volume`` or container name, or a
        container list naming kresume's own containers.
    """
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    spec = pod.get("spec") or {}

    raw_dir = ann.get(contract.ANN_CHECKPOINT_DIR)
    checkpoint_dir = check_dir(raw_dir) if raw_dir is not None else contract.DEFAULT_CHECKPOINT_DIR

    volume = ann.get(contract.ANN_VOLUME)
    if volume is not None:
        names = [v.get("name") for v in spec.get("volumes") or []]
        if volume not in names:
            raise InjectionError(
                "InvalidAnnotation",
                f"annotation {contract.ANN_VOLUME}: the pod has no volume {volume!r} "
                f"(volumes: {', '.join(map(str, names)) or 'none'})",
            )

    own = {contract.SIDECAR_CONTAINER_NAME, contract.RESTORE_CONTAINER_NAME}
    all_names = [c.get("name") for c in spec.get("containers") or [] if c.get("name") not in own]
    raw = ann.get(contract.ANN_CONTAINERS)
    if raw is None:
        containers = tuple(all_names)
    else:
        wanted = [n.strip() for n in raw.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in all_names]
        if not wanted or unknown:
            raise InjectionError(
                "InvalidAnnotation",
                f"annotation {contract.ANN_CONTAINERS}: {raw!r} must list containers of the pod "
                f"(unknown: {', '.join(unknown) or 'empty list'}; containers: {', '.join(all_names)})",
            )
        containers = tuple(n for n in all_names if n in wanted)
    if not containers:
        raise InjectionError("NoContainers", "the pod has no containers to inject into")

    restore = policy_restore
    if contract.ANN_RESTORE in ann:
        restore = _bool(ann[contract.ANN_RESTORE], contract.ANN_RESTORE)

    parts = ann.get(contract.ANN_PARTS)
    if parts is not None and parts not in PARTS_MODES:
        raise InjectionError("InvalidAnnotation", f"annotation {contract.ANN_PARTS}: {parts!r}; the one mode is "
                                                  f"{', '.join(PARTS_MODES)} (leave it out for the format's own rule)")

    return PodOptions(
        parts=parts,
        checkpoint_dir=checkpoint_dir,
        dir_explicit=raw_dir is not None,
        volume=volume,
        containers=containers,
        restore=restore,
    )
