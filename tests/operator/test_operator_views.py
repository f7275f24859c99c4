"""kresume's views of policies, runs and live pods (operator/views.py) and the listing book that says when they are
complete (operator/kopf_listing.py): pure, fed with watch events as kopf delivers them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kresume import contract
from kresume.operator import admission, decisions, kopf_listing, views

NS = "team-a"


def run_body(name: str, *, latest: dict[str, Any] | None = None, history: list[str] = ()) -> dict[str, Any]:
    status: dict[str, Any] = {"checkpoints": 3 if latest else 0, "worldSize": 1,
                              "history": [{"time": t, "pod": f"{name}-{i}", "resumedFrom": "none"}
                                          for i, t in enumerate(history)]}
    if latest:
        status["latest"] = latest
    return {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.RUN_KIND,
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "managedFields": [{"manager": "x"}] * 5},
            "spec": {"run": name, "policy": "default", "url": f"s3://b/{NS}/{name}/", "source": "job"},
            "status": status}


def pod(name: str, run: str, *, phase: str = "Pending", injected: bool = True) -> dict[str, Any]:
    ann = {contract.ANN_INJECTED: "true"} if injected else {}
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "annotations": ann,
                         "labels": {contract.LABEL_INJECT: "true", "job-name": run}},
            "spec": {"containers": [{"name": "trainer", "image": "x"}]}, "status": {"phase": phase}}


def test_a_run_is_kept_compact_and_read_as_the_object_it_came_from():
    latest = {"url": f"s3://b/{NS}/r/step-10/", "checkpoint": "ck-10", "step": 10,
              "committedAt": "2026-01-02T00:00:00.000000Z"}
    body = run_body("r", latest=latest, history=["2026-01-01T01:00:00Z", "2026-01-03T00:00:00Z"])
    v = views.RunView()
    v.observe(None, body)
    small = v[(NS, "r")]
    assert small["spec"] == {"url": f"s3://b/{NS}/r/", "policy": "default"}
    assert "managedFields" not in small["metadata"] and len(repr(small)) < len(repr(body)) / 2
    # what admission, the refresher and TTL expiry read gives the same answer as on the whole object
    assert admission.status_fallback(small) == admission.status_fallback(body)
    assert decisions.last_activity(small) == decisions.last_activity(body) == "2026-01-03T00:00:00Z"
    assert decisions.record_latest(small["status"], latest, 3, pending=None) is None
    now = datetime(2026, 2, 1, tzinfo=UTC)
    assert decisions.expired(small, ttl_seconds=86400, now=now, live=False) \
        == decisions.expired(body, ttl_seconds=86400, now=now, live=False) is True
    # modified, then deleted
    v.observe("MODIFIED", run_body("r"))
    assert admission.status_fallback(v[(NS, "r")]) is None
    v.observe("DELETED", run_body("r"))
    assert (NS, "r") not in v and len(v) == 0


def test_live_pods_follow_phase_deletion_and_the_injected_annotation():
    v = views.LiveView()
    v.observe(None, pod("r-0", "r"))
    v.observe("ADDED", pod("r-1", "r"))
    v.observe("ADDED", pod("plain", "s", injected=False))  # kresume is off for it: not a live pod of kresume's
    assert v[(NS, "r")] == {"r-0", "r-1"} and (NS, "s") not in v and v.pods() == 2
    v.observe("MODIFIED", pod("r-0", "r", phase="Running"))
    assert v.pods() == 2
    v.observe("MODIFIED", pod("r-0", "r", phase="Failed"))
    assert v[(NS, "r")] == {"r-1"}
    v.observe("DELETED", pod("r-1", "r"))
    assert (NS, "r") not in v and v.pods() == 0 and len(v) == 0


def test_policies_view_and_admissions_first_lookup():
    v = views.PolicyView()
    v.observe(None, {"metadata": {"name": "default", "namespace": NS}, "spec": {"storage": "s3://b"}})
    assert admission._first(v, (NS, "default")) == {"storage": "s3://b"}
    assert admission._first(v, (NS, "other")) is None
    assert admission._first({(NS, "x"): [{"a": 1}]}, (NS, "x")) == {"a": 1}  # dicts of lists still read
    v.observe("DELETED", {"metadata": {"name": "default", "namespace": NS}})
    assert len(v) == 0


def test_the_listing_is_complete_once_every_listed_event_is_processed_and_it_latches():
    book = kopf_listing.Listings()
    a, b = book.watch("pods", "ns-a"), book.watch("pods", "ns-b")
    runs = book.watch("checkpointruns", None)
    events = [{"type": None, "object": {"metadata": {"uid": str(i)}}} for i in range(3)]
    book.listed_event(a, events[0])
    book.listed_event(b, events[1])
    book.end_of_listing(a)
    book.end_of_listing(runs)
    assert book.ready("checkpointruns") and not book.ready("pods")
    book.processed(events[0])
    assert not book.ready("pods")  # ns-b has neither listed nor processed its object
    book.processed(events[2])  # not a listed event: changes nothing
    book.end_of_listing(b)
    assert not book.ready("pods")
    book.processed(events[1])
    assert book.ready("pods")
    c = book.watch("pods", "ns-a")  # a lost watch re-lists: the view stays ready (as kopf's gate)
    book.listed_event(c, events[2])
    assert book.ready("pods")


def test_a_watch_that_stops_drops_its_pending_events():
    book = kopf_listing.Listings()
    w = book.watch("pods", None)
    ev = {"type": None, "object": {}}
    book.listed_event(w, ev)
    book.stopped(w)  # kopf restarts the stream: a new watch lists again
    w2 = book.watch("pods", None)
    book.end_of_listing(w2)
    assert book.ready("pods")


def test_views_report_ready_from_the_listing_of_their_resource():
    listed: set[str] = set()
    v = views.Views(lambda plural: plural in listed)
    assert not v.ready and not v.runs.ready
    listed.add(contract.RUN_PLURAL)
    assert v.runs.ready and not v.live.ready and not v.ready
    listed.add("pods")
    assert v.ready


def test_the_listing_waits_for_room_and_gives_up_waiting_on_a_stalled_processor():
    import asyncio

    async def scenario() -> None:
        book = kopf_listing.Listings()
        w = book.watch("pods", None)
        events = [{"type": None, "object": {}} for _ in range(3)]
        for ev in events[:2]:
            book.listed_event(w, ev)
        waiting = asyncio.ensure_future(kopf_listing._room(w, 2, stall=30.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # two pending, limit two: the listing holds
        book.processed(events[0])
        await asyncio.wait_for(waiting, 5)
        assert not w.unbounded
        book.listed_event(w, events[2])
        await kopf_listing._room(w, 2, stall=0.05)  # nothing is processed: it stops waiting for this watch
        assert w.unbounded
        await asyncio.wait_for(kopf_listing._room(w, 2, stall=30.0), 1)  # and never waits again

    asyncio.run(scenario())


class _Api:
    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj, self.reads = obj, 0

    async def run(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.obj


def test_admission_reads_a_run_the_view_lacks_only_while_the_listing_is_not_handled():
    import asyncio
    from types import SimpleNamespace

    latest = {"url": "s3://b/team-a/r/c/x.ckpt", "checkpoint": "c", "step": 3}
    api = _Api(run_body("r", latest=latest))
    state = SimpleNamespace(api=api)
    listed = {"ready": False}
    v = views.RunView(lambda: listed["ready"])
    got = asyncio.run(admission._run_object(state, v, NS, "r"))  # type: ignore[arg-type]
    assert admission.status_fallback(got).checkpoint == "c" and api.reads == 1
    v.observe(None, run_body("s", latest=latest))
    assert asyncio.run(admission._run_object(state, v, NS, "s"))["status"]["latest"] == latest  # type: ignore[arg-type]
    assert api.reads == 1  # in the view: no read
    listed["ready"] = True
    assert asyncio.run(admission._run_object(state, v, NS, "r")) is None  # type: ignore[arg-type]
    assert api.reads == 1  # a complete view that lacks a run: the run has no object


def test_fsspec_backends_are_preloaded_only_when_fsspec_is_the_operators_client():
    import subprocess
    import sys

    # a fresh interpreter: this one may have imported them already
    code = ("import sys; from kresume.operator import handlers; "
            "print(handlers.preload_backends({}), 's3fs' in sys.modules, "
            "handlers.preload_backends({'KRESUME_STORE_CLIENT': 'fsspec'}), 's3fs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["[]", "False"], out
    assert "'s3fs'" in " ".join(out[2:]) and out[-1] == "True", out
