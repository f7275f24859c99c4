"""The webhook server: kopf's ``WebhookServer`` plus one fix-up of the admission request, and kresume's own
handler for ``/inject-pod``.

kube-apiserver sends the object of a CREATE as the client wrote it: a pod created without
``metadata.namespace`` in its body (the Job controller's, ``kubectl create -n``) arrives with the
namespace only in ``request.namespace``. kopf hands handlers the object alone, so
:func:`fill_namespace` copies ``request.namespace`` into the object first (Istio's injector does
the same). The JSON patch returned is a diff of that same body, so the copy never appears in it.

A review of ``/inject-pod`` that :func:`kresume.operator.review.handles` accepts is answered by the coroutine
given to :meth:`WebhookServer.route` (set at the operator's startup, :mod:`kresume.operator.handlers`) in the
same aiohttp server, TLS and port kopf runs: kopf's admission machinery costs more than the admission itself
(:mod:`kresume.operator.review`). Until a route is set, and for every other review, kopf serves as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.web
import kopf

from kresume.operator import review as reviews

#: kresume's handler of one parsed AdmissionReview: returns the AdmissionReview response.
ReviewFn = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


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
    """``kopf.WebhookServer`` that applies :func:`fill_namespace` to every review it serves, and answers
    ``/inject-pod`` with the :meth:`route` handler when one is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._routes: dict[str, ReviewFn] = {}

    def route(self, path: str, fn: ReviewFn) -> None:
        """Answer the reviews POSTed to ``/<path>`` that :func:`~kresume.operator.review.handles` accepts with
        ``fn(review)`` (the review's namespace already filled in) instead of kopf's handlers."""
        self._routes[path] = fn

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async def wrapped(request: dict[str, Any], **kwargs: Any) -> Any:
            return await fn(fill_namespace(request), **kwargs)

        async for config in super().__call__(wrapped):
            yield config

    async def _serve(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        """kopf's ``_serve`` (a staticmethod it calls as ``self._serve(fn, request)``), with kresume's route first.

        A body that is not JSON, or a review kresume does not handle, goes to kopf unchanged (its HTTP 400s)."""
        own = self._routes.get(request.match_info.get("id") or "")
        if own is None:
            return await super()._serve(fn, request)
        raw = await request.read()
        try:
            review = json.loads(raw)
        except ValueError:
            review = None
        if not isinstance(review, dict) or not reviews.handles(review):
            return await super()._serve(fn, request)  # aiohttp keeps the body read: kopf reads it again
        return aiohttp.web.json_response(await own(fill_namespace(review)))

