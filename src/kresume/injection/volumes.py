"""Which volume holds the checkpoint dir, and the mounts that share it with the sidecar.

Rules (DESIGN.md "Pod API"), first that applies wins:

1. ``kresume.dev/volume: V`` — use pod volume V. If a training container already mounts V, the
   sidecar mounts it at the same path (and subPath), so both see the same files at the same paths.
2. A training container already has a mount whose path is the checkpoint dir or a parent of it
   (the deepest such mount) — reuse that volume the same way; an emptyDir mounted over it would
   hide the user's data.
3. Otherwise add the emptyDir ``kresume-checkpoints`` and mount it at the checkpoint dir.

Training containers without a mount covering the path get one. Everything here returns new
lists; inputs are never modified.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kresume import contract
from kresume.injection.options import PodOptions

#: VolumeMount keys copied from the user's mount to kresume's (same volume, same view of it).
_COPIED_KEYS = ("name", "mountPath", "subPath", "subPathExpr")


@dataclass(frozen=True)
class VolumePlan:
    """mount : dict — the VolumeMount the sidecar/restore containers get (and missing trainers).

    new_volume : dict or None — a volume to add to ``spec.volumes`` (the emptyDir), if any.
    """

    mount: dict[str, Any]
    new_volume: dict[str, Any] | None


def _covers(mount_path: str, path: str) -> bool:
    mp = mount_path.rstrip("/") or "/"
    return path == mp or path.startswith(mp if mp.endswith("/") else mp + "/")


def _deepest_covering(containers: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    for c in containers:
        for m in c.get("volumeMounts") or []:
            mp = m.get("mountPath") or ""
            if mp and _covers(mp, path) and (best is None or len(mp) > len(best["mountPath"])):
                best = m
    return best


def plan_volume(spec: dict[str, Any], opts: PodOptions) -> VolumePlan:
    """Decide the checkpoint volume for a pod ``spec`` (core/v1 PodSpec dict) and ``opts``."""
    targets = [c for c in spec.get("containers") or [] if c.get("name") in opts.containers]
    if opts.volume is not None:
        mounts = [
            m for c in targets for m in c.get("volumeMounts") or [] if m.get("name") == opts.volume
        ]
        covering = [m for m in mounts if _covers(m.get("mountPath", ""), opts.checkpoint_dir)]
        if covering:
            chosen = covering[0]
        elif mounts and not opts.dir_explicit:
            chosen = mounts[0]
        else:
            chosen = {"name": opts.volume, "mountPath": opts.checkpoint_dir}
        return VolumePlan({k: chosen[k] for k in _COPIED_KEYS if k in chosen}, None)

    existing = _deepest_covering(targets, opts.checkpoint_dir)
    if existing is not None:
        return VolumePlan({k: existing[k] for k in _COPIED_KEYS if k in existing}, None)
    return VolumePlan(
        {"name": contract.VOLUME_NAME, "mountPath": opts.checkpoint_dir},
        {"name": contract.VOLUME_NAME, "emptyDir": {}},
    )


def checkpoint_dir(plan: VolumePlan, opts: PodOptions) -> str:
    """The dir the trainer writes to: the annotation, or the user's mount path of an annotated
    volume when no dir was given (``kresume.dev/volume`` alone means "that volume's mount")."""
    if opts.volume is not None and not opts.dir_explicit:
        return str(plan.mount["mountPath"])
    return opts.checkpoint_dir


def ensure_volume(volumes: list[dict[str, Any]] | None, plan: VolumePlan) -> list[dict[str, Any]]:
    """``spec.volumes`` with ``plan.new_volume`` appended unless a volume of that name exists."""
    out = copy.deepcopy(list(volumes or []))
    if plan.new_volume is not None and all(v.get("name") != plan.new_volume["name"] for v in out):
        out.append(copy.deepcopy(plan.new_volume))
    return out


def ensure_mount(container: dict[str, Any], plan: VolumePlan) -> tuple[dict[str, Any], str | None]:
    """A copy of ``container`` that sees the checkpoint volume at ``plan.mount['mountPath']``.

    Returns the container and a warning when another volume already sits at that exact path
    (the container is left as is: the user's mount wins).
    """
    out = copy.deepcopy(container)
    mounts = out.get("volumeMounts") or []
    path = plan.mount["mountPath"]
    for m in mounts:
        if m.get("mountPath") == path:
            if m.get("name") == plan.mount["name"]:
                return out, None
            return out, (
                f"container {out.get('name')!r} mounts volume {m.get('name')!r} at {path}; "
                f"kresume's volume {plan.mount['name']!r} was not mounted there"
            )
    out["volumeMounts"] = [*mounts, copy.deepcopy(plan.mount)]
    return out, None
