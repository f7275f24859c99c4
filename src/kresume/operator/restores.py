"""Where a pod's restore step got its checkpoint (node-local cache or store), as the operator reports it
(issue 15 item 3).

``kresume restore`` writes its outcome (JSON: ``source`` cache|store, ``checkpoint``, ``bytes``, ``seconds``) to
the ``kresume-restore`` init container's ``terminationMessagePath``; the kubelet puts it in the pod status
(``initContainerStatuses[].state.terminated.message``, readable by anyone who can read the pod), so the operator
needs no ``pods/log`` access. From the pod watch, once per pod, :func:`observe` writes:

- a ``Restored`` Event on the pod (``… restored from the node-local cache in 0.41 s, 1000000000 B``); not an
  annotation, which would need ``pods`` ``patch``: the chart grants the operator no pod writes
  (charts/kresume/README.md "Permissions");
- ``CheckpointRun.status.restores`` (:func:`record_restore`): counts by source and the last restore;
- the metric ``kresume_restores_total{source}``.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import kopf

from kresume import contract, identity
from kresume.operator import admission, decisions, metrics, statuswriter

logger = logging.getLogger(__name__)

SOURCES = ("cache", "store")


def restore_result(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The restore step's outcome from the pod status: the parsed termination message of a ``kresume-restore``
    init container that exited 0, when it names a known ``source``; else None."""
    for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if cs.get("name") != contract.RESTORE_CONTAINER_NAME:
            continue
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
        if term.get("exitCode") != 0 or not term.get("message"):
            return None
        try:
            data = json.loads(term["message"])
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("source") not in SOURCES:
            return None
        return data
    return None


#: Pods kept in ``status.restores.pods`` so a pod is counted once, also when the operator restarts and lists it again.
RECENT_PODS = 20


def record_restore(status: dict[str, Any] | None, pod: str, result: dict[str, Any], when: str) -> dict[str, Any] | None:
    """The next ``CheckpointRun`` status after pod ``pod`` restored (``result`` from :func:`restore_result`), or
    None when this pod is already recorded. ``restores``: ``cache``/``store`` counts, ``last`` {pod, source,
    checkpoint, bytes, seconds, time} and ``pods`` (the last :data:`RECENT_PODS` counted). Pure."""
    status = copy.deepcopy(status or {})
    restores = dict(status.get("restores") or {})
    recent = list(restores.get("pods") or [])
    if pod in recent:
        return None
    restores["pods"] = (recent + [pod])[-RECENT_PODS:]
    source = str(result["source"])
    restores[source] = int(restores.get(source, 0)) + 1
    last: dict[str, Any] = {"pod": pod, "source": source, "time": when}
    for key in ("checkpoint", "bytes", "seconds"):
        if result.get(key) is not None:
            last[key] = result[key] if key != "seconds" else str(result[key])
    restores["last"] = last
    status["restores"] = restores
    return status


async def observe(pod: dict[str, Any], state: admission.State, run: identity.RunIdentity, body: Any) -> None:
    """Report a finished restore step of an injected pod once (see the module docstring)."""
    meta = pod.get("metadata") or {}
    uid = meta.get("uid") or ""
    result = restore_result(pod)
    if result is None or not uid or uid in _REPORTED:
        return
    ns, name = meta.get("namespace") or "", meta.get("name") or ""
    written = await statuswriter.update(state, ns, run.run, lambda s: record_restore(s, name, result, decisions.now_iso()))
    _REPORTED.add(uid)
    if written is None:
        return  # counted before (an operator restart lists the pod again)
    seconds = result.get("seconds")
    metrics.RESTORES.labels(str(result["source"])).inc()
    where = "the node-local cache" if result["source"] == "cache" else "the store"
    size = f", {result['bytes']} B" if result.get("bytes") is not None else ""
    kopf.event(body, type="Normal", reason="Restored",
               message=f"run {run.run}: checkpoint {result.get('checkpoint', '?')} restored from {where}"
                       + (f" in {seconds} s" if seconds is not None else "") + size)
    logger.info("pod %s/%s: restored %s from %s in %s s", ns, name, result.get("checkpoint"), result["source"],
                seconds)


class _Uids:
    """A bounded set of pod uids already reported (an LRU of ``limit``)."""

    def __init__(self, limit: int = 20000) -> None:
        from collections import OrderedDict

        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, uid: object) -> bool:
        return uid in self._items

    def add(self, uid: str) -> None:
        self._items[uid] = None
        while len(self._items) > self._limit:
            self._items.popitem(last=False)


_REPORTED = _Uids()
