"""Hand an injected pod to the webhook: an RFC 6902 JSON patch, or a kopf ``patch.fns`` function.

kopf 1.45's ``@kopf.on.mutate`` passes a ``patch`` (``kopf._cogs.structs.patches.Patch``); the
handler either merge-patches it (lists are replaced whole, so a merge patch of
``spec.containers`` would overwrite a concurrent change) or appends a function to
``patch.fns`` that transforms the body in place; kopf then diffs the original against the
transformed body with ``jsonpatch.JsonPatch.from_diff`` and answers with that JSON patch.

:func:`json_patch` gives the operations ``from_diff`` gives, but builds them itself when the change only adds
(:func:`additive_ops`, what injection does): ``from_diff`` serialises every item of every list it compares and
runs a sequence matcher over them, and was most of an admission's CPU under a burst (py-spy, ``bench/burst.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, MutableMapping
from typing import Any

import jsonpatch  # a kopf dependency; the same diff kopf uses for admission responses


def json_patch(original: dict[str, Any], mutated: dict[str, Any]) -> list[dict[str, Any]]:
    """RFC 6902 operations that turn ``original`` into ``mutated`` (``[]`` when equal): exactly
    ``jsonpatch.JsonPatch.from_diff(original, mutated).patch`` (the diff kopf answered admissions with), from
    :func:`additive_ops` when it applies. The values of the operations may be ``mutated``'s own objects."""
    ops = additive_ops(original, mutated)
    if ops is None:
        ops = jsonpatch.JsonPatch.from_diff(original, mutated).patch
    return ops


#: jsonpatch 1.48's ``_EXACT_MATCH_LIMIT``: above it its sequence matcher is not exact (then we defer to it).
_EXACT_MATCH_LIMIT = 500**2


def additive_ops(src: Any, dst: Any) -> list[dict[str, Any]] | None:
    """The operations ``jsonpatch.JsonPatch.from_diff(src, dst)`` gives, when ``dst`` differs from ``src`` only by
    added object members, scalar values replaced in objects, and array items added after the items it changes
    in place; None for any other change (a member or item removed, an item that could be moved, a scalar item
    changed), which :func:`json_patch` leaves to ``from_diff``.

    The order and form follow ``jsonpatch.DiffBuilder`` (1.48): in an object, its added members (in ``dst``'s
    order), then its common members (in ``src``'s order); in an array, the items between the common start and
    end are paired by position (when none of them equals one of the other side, ``SequenceMatcher`` pairs them
    so too), then the rest of ``dst``'s are added; values are JSON-compared (``1``, ``1.0`` and ``true`` differ).
    ``tests/injection/test_injection_patch.py`` compares both on the golden pods and on generated documents.
    """
    ops: list[dict[str, Any]] = []
    return ops if _diff("", src, dst, ops) else None


def _pointer(path: str, key: Any) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _diff(path: str, src: Any, dst: Any, ops: list[dict[str, Any]]) -> bool:
    """Append the operations of ``src`` → ``dst`` at ``path`` to ``ops``; False when not additive."""
    if type(src) is dict and type(dst) is dict:
        if any(key not in dst for key in src):
            return False
        if any(type(key) is not str for key in dst):
            return False
        ops.extend({"op": "add", "path": _pointer(path, key), "value": value}
                   for key, value in dst.items() if key not in src)
        return all(_diff(_pointer(path, key), value, dst[key], ops) for key, value in src.items())
    if type(src) is list and type(dst) is list:
        return _diff_lists(path, src, dst, ops)
    if not isinstance(src, (dict, list)) and not isinstance(dst, (dict, list)) and _same(src, dst):
        return True
    return _replace(path, src, dst, ops)  # a scalar changed, or an object became an array (or a scalar)


def _replace(path: str, src: Any, dst: Any, ops: list[dict[str, Any]]) -> bool:
    if not path or not _plain(src) or not _plain(dst):  # the root, or a value that is no JSON
        return False
    ops.append({"op": "replace", "path": path, "value": dst})
    return True


def _diff_lists(path: str, src: list[Any], dst: list[Any], ops: list[dict[str, Any]]) -> bool:
    shorter = min(len(src), len(dst))
    start = 0
    while start < shorter and _same(src[start], dst[start]):
        start += 1
    end = 0
    while end < shorter - start and _same(src[-1 - end], dst[-1 - end]):
        end += 1
    old, new = src[start:len(src) - end], dst[start:len(dst) - end]
    if len(old) > len(new) or len(old) * len(new) > _EXACT_MATCH_LIMIT:
        return False
    if any(_same(a, b) for a in old for b in new):  # the matcher would pair those: defer to it
        return False
    for i, (a, b) in enumerate(zip(old, new)):
        if not ((type(a) is dict and type(b) is dict) or (type(a) is list and type(b) is list)):
            return False  # jsonpatch removes and adds such an item (and may later move it)
        if not _diff(f"{path}/{start + i}", a, b, ops):
            return False
    ops.extend({"op": "add", "path": f"{path}/{start + i}", "value": value}
               for i, value in enumerate(new[len(old):], start=len(old)))
    return True


def _plain(value: Any) -> bool:
    """A JSON value as ``json.loads`` makes them (what a scalar replace may carry)."""
    return value is None or type(value) in (str, int, float, bool, dict, list)


def _same(a: Any, b: Any) -> bool:
    """JSON equality as jsonpatch compares items (``json.dumps`` of members sorted by key): types count."""
    ta, tb = type(a), type(b)
    if ta is not tb:
        return False
    if ta is dict:
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if ta is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if ta is float:
        return repr(a) == repr(b)
    if ta in (str, int, bool) or a is None:
        return bool(a == b)
    return False


def replace_body(mutated: dict[str, Any]) -> Callable[[MutableMapping[str, Any]], None]:
    """A kopf patch function: ``patch.fns.append(replace_body(result.pod))``.

    It makes the body kopf hands it equal to ``mutated`` (a deep copy; ``mutated`` itself is
    never aliased), which is idempotent.
    """

    def fn(body: MutableMapping[str, Any]) -> None:
        body.clear()
        body.update(copy.deepcopy(mutated))

    return fn
