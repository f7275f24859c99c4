"""Env entries kresume adds to containers; a user's entry of the same name always wins."""

from __future__ import annotations

import copy
from typing import Any

EnvVar = dict[str, Any]


def value(name: str, val: str) -> EnvVar:
    """``{"name": name, "value": val}`` (core/v1 EnvVar)."""
    return {"name": name, "value": val}


def field_ref(name: str, field_path: str) -> EnvVar:
    """An EnvVar from the downward API (``metadata.name``, ``metadata.namespace``)."""
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def ensure_env(container: dict[str, Any], wanted: list[EnvVar]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``container`` with each of ``wanted`` appended to ``env`` unless present.

    An existing entry of the same name is kept as the user wrote it (user wins; Kubernetes would
    otherwise use the last duplicate). When its content differs from ours a warning names the
    container and variable. An identical entry (e.g. from an earlier injection) is silent, which
    keeps injection idempotent. Order: user entries first, then ours in ``wanted`` order.

    Returns
    -------
    (container, warnings)
    """
    out = copy.deepcopy(container)
    env: list[EnvVar] = list(out.get("env") or [])
    by_name = {e.get("name"): e for e in env}
    warnings: list[str] = []
    for entry in wanted:
        have = by_name.get(entry["name"])
        if have is None:
            env.append(copy.deepcopy(entry))
            by_name[entry["name"]] = entry
        elif have != entry:
            warnings.append(
                f"container {out.get('name')!r} sets {entry['name']} itself; kept its value "
                f"instead of kresume's ({_show(entry)})"
            )
    if env:
        out["env"] = env
    return out, warnings


def _show(entry: EnvVar) -> str:
    if "value" in entry:
        return repr(entry["value"])
    return "from " + ",".join(sorted((entry.get("valueFrom") or {}).keys()))
