"""The resume-epoch decision (``operator/epochs.py``): a table of cases, and the status round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kresume.injection import Resume
from kresume.operator import epochs as ep

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
X = Resume(url="s3://b/ns/run/checkpoints/x/step_20", checkpoint="x", name="step_20", step=20)


def epoch(ranks=(0,), world=2, started=T0) -> ep.Epoch:
    return ep.Epoch("20261201T120000000000Z-abc123", X, world, started.strftime("%Y-%m-%dT%H:%M:%SZ"), tuple(ranks))


# id, current, rank, world, seconds after start, live, bad, expected
CASES = [
    ("first admission", None, 0, 2, 0, False, False, (ep.NEW, ep.FIRST)),
    ("second rank joins", epoch((0,)), 1, 2, 5, True, False, (ep.JOIN, "")),
    ("joins before any pod shows up", epoch((0,)), 1, 2, 5, False, False, (ep.JOIN, "")),
    ("a repeated rank restarts", epoch((0, 1)), 1, 2, 5, True, False, (ep.NEW, ep.REPEATED_RANK)),
    ("the replacement's peer joins the new epoch", epoch((1,)), 0, 2, 30, True, False, (ep.JOIN, "")),
    ("a live pod keeps it open past the window", epoch((0,)), 1, 2, 3600, True, False, (ep.JOIN, "")),
    ("closed: no live pod, past the window", epoch((0,)), 1, 2, 61, False, False, (ep.NEW, ep.CLOSED)),
    ("closed by a bad mark", epoch((0,)), 1, 2, 5, True, True, (ep.NEW, ep.BAD_MARK)),
    ("a new world size", epoch((0,), world=2), 1, 4, 5, True, False, (ep.NEW, ep.WORLD_CHANGED)),
]


@pytest.mark.parametrize("after, rank_pod, expected", [
    (2, ep.UNSEEN, (ep.JOIN, "")),  # the creation failed after its admission (AlreadyExists): its retry joins
    (2, ep.LIVE, (ep.JOIN, "")),  # rank 1's pod of this epoch runs: a second admission of it is a duplicate
    (3600, ep.LIVE, (ep.JOIN, "")),
    (2, ep.ENDED, (ep.NEW, ep.REPEATED_RANK)),  # its pod of this epoch ended: this is a restart
    (61, ep.UNSEEN, (ep.NEW, ep.REPEATED_RANK)),  # never seen, past the join window: a restart
])
def test_a_repeated_rank_is_a_restart_only_when_its_pod_in_the_epoch_ended(after, rank_pod, expected):
    assert ep.decide(epoch((0, 1)), 1, 2, T0 + timedelta(seconds=after), live=True, bad=False, join_seconds=60,
                     rank_pod=rank_pod) == expected


def test_live_pods_follow_each_ranks_pod_of_each_epoch():
    from kresume.operator.epochbook import LivePods

    live = LivePods()
    pod = {"metadata": {"uid": "u1", "annotations": {"kresume.dev/epoch": "tok"}},
           "spec": {"containers": [{"name": "trainer", "env": [{"name": "KRESUME_RANK", "value": "1"}]}]},
           "status": {"phase": "Running"}}
    assert live.rank_pod("tok", 1) == ep.UNSEEN
    live.observed(pod, deleted=False)
    assert live.rank_pod("tok", 1) == ep.LIVE and live.rank_pod("tok", 0) == ep.UNSEEN
    assert live.rank_pod("other", 1) == ep.UNSEEN
    live.observed({**pod, "status": {"phase": "Failed"}}, deleted=False)
    assert live.rank_pod("tok", 1) == ep.ENDED and not live.live("tok")


@pytest.mark.parametrize("case, current, rank, world, after, live, bad, expected", CASES, ids=[c[0] for c in CASES])
def test_decide(case, current, rank, world, after, live, bad, expected):
    assert ep.decide(current, rank, world, T0 + timedelta(seconds=after), live=live, bad=bad,
                     join_seconds=60) == expected


def test_status_round_trip_and_join():
    e = epoch((1,)).joined(0).joined(1)
    assert e.ranks == (0, 1)
    doc = e.to_status()
    assert doc == {"token": e.token, "worldSize": 2, "started": "2026-12-01T12:00:00Z", "ranks": [0, 1],
                   "checkpoint": "x", "url": X.url, "name": "step_20", "step": 20}
    assert ep.Epoch.from_status(doc) == e
    fresh = ep.Epoch("t-1", None, 2, "2026-12-01T12:00:00Z", (0,))
    assert ep.Epoch.from_status(fresh.to_status()) == fresh and fresh.checkpoint is None
    assert ep.Epoch.from_status(None) is None and ep.Epoch.from_status({"token": "t"}) is None


def test_token_format():
    assert ep.new_token(T0, "a1b2c3") == "20261201T120000000000Z-a1b2c3"
    assert len(ep.new_token(T0).rsplit("-", 1)[1]) == 6
