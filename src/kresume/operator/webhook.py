"""The webhook server: kopf's ``WebhookServer`` plus one fix-up of the admission request.

kube-apiserver sends the object of a CREATE as the client wrote it: a pod created without
``metadata.namespace`` in its body (the Job controller's, ``kubectl create -n``) arrives with the
namespace only in ``request.namespace``. kopf hands handlers the object alone, so
:func:`fill_namespace` copies ``request.namespace`` into the object first (Istio's injector does
the same). The JSON patch kopf returns is a diff of that same body, so the copy never appears in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kopf


def fill_namespace(review: dict[str, Any]) -> dict[str, Any]:
    """Set ``request.object.metadata.namespace`` from ``request.namespace`` when it is missing (in place)."""
    req = review.get("request") or {}
    obj = req.get("object")
    ns = req.get("namespace")
    if isinstance(obj, dict) and ns:
        meta = obj.setdefault("metadata", {})
        if not meta.get("namespace"):
            meta["namespace"] = ns
    return review


class WebhookServer(kopf.WebhookServer):
    """``kopf.WebhookServer`` that applies :func:`fill_namespace` to every review it serves."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async def wrapped(request: dict[str, Any], **kwargs: Any) -> Any:
            return await fn(fill_namespace(request), **kwargs)

        async for config in super().__call__(wrapped):
            yield config
