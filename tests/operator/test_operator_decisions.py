"""Pure operator rules: sidecar mode, disruption reasons, CheckpointRun status updates, TTL, credentials."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from kresume import contract
from kresume.operator import credentials, decisions
from kresume.operator.notes import Note, Notes


@pytest.mark.parametrize("info, expected", [
    ({"major": "1", "minor": "20"}, (1, 20)),
    ({"major": "1", "minor": "29+"}, (1, 29)),
    ({"gitVersion": "v1.31.2-eks-1"}, (1, 31)),
    ({}, (0, 0)),
])
def test_server_version(info, expected):
    assert decisions.server_version(info) == expected


@pytest.mark.parametrize("mode, version, native", [
    ("auto", (1, 20), False), ("auto", (1, 28), False), ("auto", (1, 29), True), ("auto", (2, 0), True),
    ("always", (1, 20), True), ("never", (1, 31), False),
])
def test_native_sidecar(mode, version, native):
    assert decisions.native_sidecar(mode, version) is native


def test_native_sidecar_rejects_unknown_mode():
    with pytest.raises(ValueError, match="--native-sidecar"):
        decisions.native_sidecar("sometimes", (1, 30))


def pod(phase="Running", **status):
    return {"metadata": {"name": "p"}, "status": {"phase": phase, **status}}


@pytest.mark.parametrize("body, reason", [
    (pod(conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]),
     "PreemptionByScheduler"),
    (pod(conditions=[{"type": "DisruptionTarget", "status": "False", "reason": "X"}]), None),
    (pod("Failed", reason="Evicted"), "Evicted"),
    (pod("Failed", reason="NodeLost"), "NodeLost"),
    (pod("Failed", reason="Shutdown"), "Shutdown"),
    (pod("Failed"), None),
    (pod("Succeeded"), None),
    ({"metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}},
     "Deleted"),
    ({"metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Succeeded"}},
     None),
])
def test_disruption(body, reason):
    assert decisions.disruption(body) == reason


def entry(name: str) -> dict:
    return {"pod": name, "resumedFrom": "none", "time": "2024-01-01T00:00:00Z"}


def test_record_admission_bounds_history_and_counts_no_restart():
    status = decisions.record_admission(None, entry("p0"), limit=3)
    assert status == {"history": [entry("p0")], "restarts": 0}
    for i in range(1, 6):
        status = decisions.record_admission(status, entry(f"p{i}"), limit=3)
    assert [h["pod"] for h in status["history"]] == ["p3", "p4", "p5"]
    assert status["restarts"] == 0, "replacements of pods that failed by themselves (start failures) are no restarts"
    assert decisions.record_admission(status, entry("p5"), limit=3) is None  # replayed pod: no change


def test_admission_entry_reads_annotations():
    body = {"metadata": {"name": "train-x", "annotations": {contract.ANN_RESUMED_FROM: "s3://b/r/c", contract.ANN_RESUMED_STEP: "40"}}}
    assert decisions.admission_entry(body, "T") == {"pod": "train-x", "resumedFrom": "s3://b/r/c", "time": "T", "step": 40}


def test_record_disruption_once_per_pod():
    s = decisions.record_disruption({"restarts": 1}, "p1", "Evicted", "T1")
    assert s == {"restarts": 2, "lastPreemption": {"pod": "p1", "reason": "Evicted", "time": "T1"}}
    assert decisions.record_disruption(s, "p1", "Deleted", "T2") is None


def test_restarts_count_each_disrupted_pod_once_in_any_event_order_of_two_ranks():
    # Two pods of one run preempted together: their watch events interleave (condition, Failed, deletion...).
    s = None
    for name in ("a", "b"):
        s = decisions.record_admission(s, entry(name), limit=20)
    for name in ("a", "b", "a", "b", "a"):
        s = decisions.record_disruption(s, name, "PreemptionByScheduler", "T") or s
    assert s["restarts"] == 2
    assert {h["pod"]: h.get("disruption") for h in s["history"]} == {"a": "PreemptionByScheduler",
                                                                    "b": "PreemptionByScheduler"}
    # The replacements are admitted (no count), and a replay after an operator restart changes nothing.
    for name in ("a2", "b2"):
        s = decisions.record_admission(s, entry(name), limit=20)
    assert decisions.record_disruption(s, "a", "PreemptionByScheduler", "T9") is None
    assert s["restarts"] == 2 and s["lastPreemption"]["pod"] in ("a", "b")


def test_a_pod_older_than_the_history_window_is_not_counted_again():
    s = {"restarts": 3, "history": [{"pod": "new", "time": "2024-01-02T00:00:00Z"}]}
    assert decisions.record_disruption(s, "old", "Evicted", "T", created="2024-01-01T00:00:00Z") is None
    assert decisions.record_disruption(s, "other", "Evicted", "T", created="2024-01-03T00:00:00Z")["restarts"] == 4


def test_record_latest_only_when_changed():
    latest = {"url": "s3://b/r/checkpoints/c/x.ckpt", "checkpoint": "c", "step": 3}
    s = decisions.record_latest({}, latest, 2)
    assert s == {"latest": latest, "checkpoints": 2}
    assert decisions.record_latest(s, latest, 2) is None
    assert decisions.record_latest(s, latest, None) is None


def test_expired():
    now = datetime(2024, 1, 10, tzinfo=UTC)
    old = {"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
           "status": {"history": [{"time": "2024-01-02T00:00:00Z"}]}}
    assert decisions.expired(old, ttl_seconds=86400, now=now, live=False)
    assert not decisions.expired(old, ttl_seconds=86400, now=now, live=True)
    assert not decisions.expired(old, ttl_seconds=0, now=now, live=False)
    assert not decisions.expired(old, ttl_seconds=timedelta(days=9).total_seconds(), now=now, live=False)


@pytest.mark.parametrize("value", ["default", "fast-s3", "a.b"])
def test_policy_name_ok(value):
    assert decisions.policy_name({"metadata": {"annotations": {contract.ANN_POLICY: value}}}) == value


def test_policy_name_default():
    assert decisions.policy_name({"metadata": {}}) == contract.DEFAULT_POLICY_NAME


def test_credentials_from_secret():
    secret = credentials.decode_secret({k: base64.b64encode(v.encode()).decode() for k, v in {
        "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AZURE_STORAGE_ACCOUNT_NAME": "acct"}.items()})
    assert credentials.storage_options("s3://b/p", {}, secret) == {"key": "AK", "secret": "SK"}
    assert credentials.storage_options("az://c/p", {}, secret) == {"account_name": "acct"}
    assert credentials.storage_options("s3://b/p", {"key": "policy-wins"}, secret)["key"] == "policy-wins"
    gcs = credentials.storage_options("gs://b/p", {}, {"sa.json": '{"type": "service_account", "x": 1}'})
    assert gcs == {"token": {"type": "service_account", "x": 1}}
    assert credentials.storage_options("file:///tmp/x", {}, None) == {}


def test_notes_expire_and_pop_once():
    t = [0.0]
    notes = Notes(ttl=10, clock=lambda: t[0])
    notes.add("ns", "run", [Note("A", "a")])
    notes.add("ns", "run", [Note("B", "b")])
    assert [n.reason for n in notes.pop("ns", "run")] == ["A", "B"]
    assert notes.pop("ns", "run") == []
    notes.add("ns", "run", [Note("C", "c")])
    t[0] = 11
    assert notes.pop("ns", "run") == []


def test_pending_steps_summary_and_record():
    assert decisions.pending_summary(None) is False  # the store cannot say: leave status.pending alone
    assert decisions.pending_summary([]) is None
    assert decisions.pending_summary([30, 20]) == {"step": 30, "count": 2}
    status = {"latest": {"url": "u", "checkpoint": "c"}, "pending": {"step": 30, "count": 1}}
    assert decisions.record_latest(status, status["latest"], None, pending=False) is None
    assert "pending" not in decisions.record_latest(status, status["latest"], None, pending=None)
    assert decisions.record_latest(status, status["latest"], None, pending={"step": 40, "count": 2})["pending"] == \
        {"step": 40, "count": 2}


def test_world_size_is_recorded_once():
    assert decisions.record_world_size({}, 2) == {"worldSize": 2}
    assert decisions.record_world_size({"worldSize": 2}, 2) is None
