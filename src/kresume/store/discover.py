"""Runs below a URL that is not a run itself: what ``kresume ls`` names when given a namespace or base folder.

A run is a folder holding ``latest.json`` or ``manifests/`` (:mod:`kresume.store.layout`); runs live at
``<policy storage>/<namespace>/<run>/``, so a user who lists the base or a namespace folder is one or two levels
above them (new-user trial: ``kresume ls`` of a namespace folder said only "not a kresume run").
"""

from __future__ import annotations

from typing import Any

RUN_MARKERS = ("latest.json", "manifests")
"""Names directly in a run's folder that make it one."""


def _children(fs: Any, path: str) -> list[dict[str, Any]]:
    try:
        return list(fs.ls(path, detail=True))
    except FileNotFoundError:
        return []


def _base(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def runs_below(fs: Any, root: str, *, depth: int = 2, limit: int = 10, max_listings: int = 40) -> list[str]:
    """Relative paths (``"ns/run"``) of runs up to ``depth`` folders below ``root``, sorted, at most ``limit``.

    One listing per folder looked into (at most ``max_listings``: a bucket with thousands of prefixes costs a
    bounded number of requests). ``fs`` is the run store's file system (fsspec or kresume's native client);
    listing errors other than "not found" propagate as the backend raises them."""
    found: list[str] = []
    listings = 0
    frontier = [(root.rstrip("/"), "")]
    for _ in range(depth):
        deeper: list[tuple[str, str]] = []
        for path, rel in frontier:
            if listings >= max_listings or len(found) >= limit:
                break
            listings += 1
            for entry in _children(fs, path):
                if entry.get("type") != "directory":
                    continue
                name = _base(str(entry["name"]))
                child = f"{rel}/{name}" if rel else name
                if listings >= max_listings:
                    break
                listings += 1
                names = {_base(str(e["name"])) for e in _children(fs, f"{path}/{name}")}
                if names & set(RUN_MARKERS):
                    found.append(child)
                else:
                    deeper.append((f"{path}/{name}", child))
                if len(found) >= limit:
                    break
        frontier = deeper
    return sorted(found)[:limit]
