"""Hand an injected pod to the webhook: an RFC 6902 JSON patch, or a kopf ``patch.fns`` function.

kopf 1.45's ``@kopf.on.mutate`` passes a ``patch`` (``kopf._cogs.structs.patches.Patch``); the
handler either merge-patches it (lists are replaced whole, so a merge patch of
``spec.containers`` would overwrite a concurrent change) or appends a function to
``patch.fns`` that transforms the body in place; kopf then diffs the original against the
transformed body with ``jsonpatch.JsonPatch.from_diff`` and answers with that JSON patch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, MutableMapping
from typing import Any

import jsonpatch  # a kopf dependency; the same diff kopf uses for admission responses


def json_patch(original: dict[str, Any], mutated: dict[str, Any]) -> list[dict[str, Any]]:
    """RFC 6902 operations that turn ``original`` into ``mutated`` (``[]`` when equal)."""
    ops: list[dict[str, Any]] = jsonpatch.JsonPatch.from_diff(original, mutated).patch
    return ops


def replace_body(mutated: dict[str, Any]) -> Callable[[MutableMapping[str, Any]], None]:
    """A kopf patch function: ``patch.fns.append(replace_body(result.pod))``.

    It makes the body kopf hands it equal to ``mutated`` (a deep copy; ``mutated`` itself is
    never aliased), which is idempotent.
    """

    def fn(body: MutableMapping[str, Any]) -> None:
        body.clear()
        body.update(copy.deepcopy(mutated))

    return fn
