"""kresume's in-memory views of the watched objects: policies, CheckpointRuns, live injected pods.

They replace kopf's indexes (``@kopf.index``), which held every listed object's body until *all* indexes were
filled (kopf's index-readiness gate): at 10,000 CheckpointRuns + 10,000 pods that was ~17 KB per object alive at
once and an 841 MiB operator (bench/RESULTS.md "Operator at cluster scale"). A view is fed by the watch event
handlers (``handlers.py``) and keeps only the fields kresume reads, so each body is reduced as it arrives and
freed with its event:

* :class:`PolicyView` — ``(namespace, name) -> CheckpointPolicy spec`` (few objects; the spec is what
  :meth:`kresume.policy.Policy.from_spec` reads).
* :class:`RunView` — ``(namespace, run) -> compact CheckpointRun``: ``spec.url``/``policy``,
  ``status.latest``/``checkpoints``/``pending`` (admission's status fallback, the refresher's unchanged-answer
  check), and the times :func:`decisions.last_activity` reads (creation, the newest admission, the last
  preemption) for TTL expiry — not the history list itself.
* :class:`LiveView` — ``(namespace, run) -> names of its live injected pods`` (the refresher's live runs).

Readiness (``ready``): the view holds every object that existed when the operator's watch listed them — kopf's
initial listing of the resource is over and every listed object's event has been handled
(:mod:`kresume.operator.kopf_listing`). Until then a missing key may mean "not listed yet": admission reads such
a run from the API instead of answering as if it had nothing committed, and the refresher waits (TTL expiry
must never delete a run whose live pod is not seen yet). Readiness latches, as kopf's gate did.

Event loop only for writes; ``len()`` and :meth:`LiveView.pods` are read from the metrics thread (atomic).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kresume import contract, identity
from kresume.operator import decisions

Key = tuple[str, str]
"""(namespace, name) of a policy or run."""

#: The ``ready`` of a view no listing tracker answers for (unit tests, tools): always ready.
ALWAYS: Callable[[], bool] = lambda: True  # noqa: E731


def _s(value: Any) -> str:
    """A string field, interned (namespaces, policy names and times repeat across thousands of objects)."""
    return sys.intern(str(value)) if value else ""


class View(Mapping[Key, Any]):
    """A read-only mapping ``key -> value`` plus :attr:`ready`; subclasses add ``observe`` (the feed)."""

    def __init__(self, ready: Callable[[], bool] = ALWAYS) -> None:
        self._items: dict[Key, Any] = {}
        self._ready = ready

    @property
    def ready(self) -> bool:
        """True once the view holds every object of the operator's initial listing (see the module)."""
        return bool(self._ready())

    def __getitem__(self, key: Key) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


def _key(body: Mapping[str, Any]) -> Key | None:
    meta = body.get("metadata") or {}
    ns, name = meta.get("namespace"), meta.get("name")
    return (_s(ns), str(name)) if ns and name else None


class ObjectView(View):
    """``(namespace, name) -> value(object)`` of every watched object of one kind; subclasses say the value."""

    def value(self, body: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Apply one watch event (``type`` None: listed, ADDED, MODIFIED, DELETED) of the object ``body``."""
        key = _key(body)
        if key is None:
            return
        if event_type == "DELETED":
            self._items.pop(key, None)
        else:
            self._items[key] = self.value(body)


class PolicyView(ObjectView):
    """``(namespace, name) -> spec`` of every CheckpointPolicy (a plain dict copy)."""

    def value(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(body.get("spec") or {})


def compact_run(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a CheckpointRun kresume reads, in the object's own shape (so :func:`admission.status_fallback`,
    :func:`decisions.record_latest` and :func:`decisions.expired` read it as they read the object): ``spec.url``,
    ``spec.policy``, ``status.latest``/``checkpoints``/``pending``, ``status.lastPreemption.time``, the newest
    ``status.history[].time`` (as a one-entry history) and ``metadata.creationTimestamp``. ~10× smaller than the
    object (its history of admissions is most of it)."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    small: dict[str, Any] = {}
    for name in ("latest", "checkpoints", "pending"):
        if status.get(name) is not None:
            small[name] = status[name]
    times = [str(h.get("time")) for h in status.get("history") or [] if isinstance(h, Mapping) and h.get("time")]
    if times:
        small["history"] = [{"time": _s(max(times))}]
    preempted = (status.get("lastPreemption") or {}).get("time")
    if preempted:
        small["lastPreemption"] = {"time": _s(preempted)}
    out: dict[str, Any] = {"spec": {"url": str(spec.get("url") or ""), "policy": _s(spec.get("policy"))},
                           "status": small,
                           "metadata": {"creationTimestamp": _s((body.get("metadata") or {}).get("creationTimestamp"))}}
    return out


class RunView(ObjectView):
    """``(namespace, run) -> compact CheckpointRun`` (:func:`compact_run`) of every CheckpointRun."""

    def value(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return compact_run(body)


class LiveView(View):
    """``(namespace, run) -> frozenset of pod names``: the live pods kresume injected (annotation
    ``injected``, :func:`decisions.is_live`), by the run their identity names. Runs with no live pod are absent."""

    def __init__(self, ready: Callable[[], bool] = ALWAYS) -> None:
        super().__init__(ready)
        self._run_of: dict[Key, Key] = {}
        """(namespace, pod name) -> the run key it is counted under."""

    def observe(self, event_type: str | None, pod: Mapping[str, Any]) -> None:
        """Apply one watch event of an opted-in pod (a plain dict)."""
        meta = pod.get("metadata") or {}
        ns, name = _s(meta.get("namespace")), str(meta.get("name") or "")
        if not ns or not name:
            return
        run: Key | None = None
        if (event_type != "DELETED" and contract.ANN_INJECTED in (meta.get("annotations") or {})
                and decisions.is_live(dict(pod))):
            ident = identity.run_identity(dict(pod))
            if isinstance(ident, identity.RunIdentity):
                run = (ns, ident.run)
        before = self._run_of.get((ns, name))
        if before == run:
            return
        if before is not None:
            rest = self._items.get(before, frozenset()) - {name}
            if rest:
                self._items[before] = rest
            else:
                self._items.pop(before, None)
            del self._run_of[(ns, name)]
        if run is not None:
            self._items[run] = self._items.get(run, frozenset()) | {name}
            self._run_of[(ns, name)] = run

    def pods(self) -> int:
        """The number of live pods held (all runs)."""
        return len(self._run_of)


class Views:
    """The three views of one operator process (``admission.State.views``)."""

    def __init__(self, ready: Callable[[str], bool] | None = None) -> None:
        """``ready(plural)``: whether the listing of resource ``plural`` is complete (None: always)."""
        def of(plural: str) -> Callable[[], bool]:
            return ALWAYS if ready is None else (lambda: ready(plural))

        self.policies = PolicyView(of(contract.POLICY_PLURAL))
        self.runs = RunView(of(contract.RUN_PLURAL))
        self.live = LiveView(of("pods"))

    @property
    def ready(self) -> bool:
        """Runs and live pods both complete (what the refresher and TTL expiry need)."""
        return self.runs.ready and self.live.ready
