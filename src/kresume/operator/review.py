"""kresume's own answer to an ``inject-pod`` AdmissionReview, without kopf's admission machinery.

kopf serves a review by wrapping the pod in its ``Body``, diffing it against nothing, running its handler
lifecycle, then deep-copying the pod, applying the handler's patch function to the copy and diffing the two
(``Patch.as_json_patch``). Under a burst of pod creations that was most of the operator's event loop (py-spy,
``bench/burst.py``: kopf's webhook serving 30 %, its JSON-patch diff 16 %). :class:`~kresume.operator.webhook.
WebhookServer` instead hands a review that :func:`handles` accepts to kresume's handler, which calls
:func:`~kresume.operator.admission.admit` on the parsed pod as is (it is this request's own copy: ``inject``
never changes its input) and answers with :func:`response`: the same ``uid``/``allowed``/``warnings``/
``patch`` kopf's ``build_response`` gives for the same admission (``tests/operator/test_operator_review.py``
compares them on the golden pods). Every other review (another path, operation, resource, a pod without the
opt-in label) still goes to kopf, which answers it as before.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from kresume import contract
from kresume.injection import json_patch



def handles(review: Mapping[str, Any]) -> bool:
    """True when ``review`` is what kopf's ``@kopf.on.mutate('pods', operations=['CREATE'],
    labels={inject: 'true'})`` handler would run for: a v1 AdmissionReview request of a pod (no subresource)
    CREATE with a user and an object whose labels carry the opt-in. Anything else kopf serves itself (it
    answers ``allowed`` without a patch, or an HTTP error for a malformed review, as it always did)."""
    req = review.get("request")
    if not isinstance(req, Mapping) or not isinstance(req.get("userInfo"), Mapping):
        return False
    resource = req.get("resource")
    if not isinstance(resource, Mapping) or (resource.get("group"), resource.get("version"),
                                             resource.get("resource")) != ("", "v1", "pods"):
        return False
    if req.get("operation") != "CREATE" or req.get("subResource"):
        return False
    obj = req.get("object")
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return isinstance(labels, Mapping) and labels.get(contract.LABEL_INJECT) == "true"


def response(review: Mapping[str, Any], pod: dict[str, Any], mutated: dict[str, Any] | None,
             warnings: list[str]) -> dict[str, Any]:
    """The AdmissionReview response to ``review``: always ``allowed`` (kresume never blocks a pod).

    ``pod`` is the review's object as admitted (namespace filled in), ``mutated`` the pod kresume made of it
    (None: admit unchanged), ``warnings`` the lines for kubectl. The patch is RFC 6902 from
    :func:`~kresume.injection.json_patch` (the diff kopf itself answers with: ``jsonpatch.from_diff``),
    base64 JSON as ``admission.k8s.io/v1`` requires; no patch when nothing changes. Field order and defaults
    follow kopf 1.45's ``build_response``.
    """
    req = review.get("request") or {}
    answer: dict[str, Any] = {"uid": req.get("uid", ""), "allowed": True}
    if warnings:
        answer["warnings"] = [str(w) for w in warnings]
    ops = json_patch(pod, mutated) if mutated is not None else []
    if ops:
        answer["patch"] = base64.b64encode(json.dumps(ops).encode("utf-8")).decode("ascii")
        answer["patchType"] = "JSONPatch"
    return {"apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
            "kind": review.get("kind", "AdmissionReview"), "response": answer}
