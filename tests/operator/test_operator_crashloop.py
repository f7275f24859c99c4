"""The crash-loop rule (``operator/crashloop.py``): which pod states are failures of their own, and the table of
decisions over ``CheckpointRun.status.crashLoop``. Pure: pod dicts as the pod watch sees them."""

from __future__ import annotations

from typing import Any

import pytest

from kresume import contract
from kresume.operator import crashloop as cl

RUN = "s3://b/base/ns/train/"
X = "0000000020-20260101T000000000000Z-aaaaaa"
W = "0000000010-20260101T000000000000Z-bbbbbb"


def term(code: int, reason: str = "Error") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason}}


def pod(*statuses: dict[str, Any], init: list[dict[str, Any]] | None = None, conditions: list[dict] | None = None,
        deleting: bool = False, phase: str = "Failed", **ann: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "train-abc", "namespace": "ns", "uid": "u1", "annotations": {
        contract.ANN_INJECTED: "legacy", contract.ANN_RESUMED_FROM: f"{RUN}checkpoints/{X}/epoch=1-step=20.ckpt",
        **ann}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta,
            "spec": {"containers": [{"name": "trainer"}, {"name": "helper"}, {"name": contract.SIDECAR_CONTAINER_NAME}]},
            "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": list(statuses),
                       "initContainerStatuses": init or []}}


def cs(name: str, state: dict[str, Any], restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "state": state, "restartCount": restarts, "lastState": last or {}}


@pytest.mark.parametrize("case, p, expected", [
    ("trainer exit 1", pod(cs("trainer", term(1))), [("u1/0", "trainer", 1)]),
    ("exit 0", pod(cs("trainer", term(0, "Completed")), phase="Succeeded"), []),
    ("SIGTERM 143", pod(cs("trainer", term(143))), []),
    ("SIGKILL 137 (node crash)", pod(cs("trainer", term(137))), []),
    ("OOMKilled", pod(cs("trainer", term(1, "OOMKilled"))), []),
    ("start error", pod(cs("trainer", term(128, "StartError"))), []),
    ("segfault counts", pod(cs("trainer", term(139))), [("u1/0", "trainer", 139)]),
    ("disruption target", pod(cs("trainer", term(1)), conditions=[{"type": "DisruptionTarget", "status": "True",
                                                                  "reason": "PreemptionByScheduler"}]), []),
    ("evicted", {**pod(cs("trainer", term(1))), "status": {**pod(cs("trainer", term(1)))["status"],
                                                          "reason": "Evicted"}}, []),
    ("deleted", pod(cs("trainer", term(1)), deleting=True), []),
    ("sidecar failing", pod(cs(contract.SIDECAR_CONTAINER_NAME, term(2)), cs("trainer", {"running": {}})), []),
    ("restore init container", pod(cs("trainer", {"waiting": {}}),
                                   init=[cs(contract.RESTORE_CONTAINER_NAME, term(5))]),
     [("u1/0", contract.RESTORE_CONTAINER_NAME, 5)]),
    ("restart inside the pod", pod(cs("trainer", {"running": {}}, restarts=2, last=term(1)), phase="Running"),
     [("u1/1", "trainer", 1)]),
    ("two trainers, one attempt", pod(cs("trainer", term(1)), cs("helper", term(2))), [("u1/0", "trainer", 1)]),
    ("only the named container", pod(cs("trainer", {"running": {}}), cs("helper", term(2)),
                                     **{contract.ANN_CONTAINERS: "trainer"}), []),
    ("epoch attempt key", pod(cs("trainer", term(1)), **{contract.ANN_EPOCH: "20260101T0000Z-abc123"}),
     [("epoch/20260101T0000Z-abc123/0", "trainer", 1)]),
])
def test_failures(case, p, expected):
    assert [(f.attempt, f.container, f.exit_code) for f in cl.failures(p)] == expected, case


def test_injected_checkpoint():
    assert cl.injected_checkpoint(pod(), RUN) == X
    fresh = pod(**{contract.ANN_RESUMED_FROM: "none"})
    assert cl.injected_checkpoint(fresh, RUN) is None
    users = pod(**{contract.ANN_RESUMED_FROM: "s3://elsewhere/mine.ckpt"})
    assert cl.injected_checkpoint(users, RUN) is None
    not_injected = pod()
    del not_injected["metadata"]["annotations"][contract.ANN_INJECTED]
    assert cl.injected_checkpoint(not_injected, RUN) is None


def fail(attempt: str) -> cl.Failure:
    return cl.Failure(attempt, f"pod-{attempt}", "trainer", 1, "Error")


def step(status, attempt, *, checkpoint=X, newest=X, marked=False, threshold=2, max_fallbacks=1):
    new, d = cl.next_status(status, checkpoint, fail(attempt), newest=newest, marked_bad=marked, threshold=threshold,
                            max_fallbacks=max_fallbacks, when="2026-01-01T00:00:00Z")
    return (new if new is not None else status), d


def test_two_failures_in_a_row_fall_back_once():
    s, d = step({}, "a/0")
    assert d.action == cl.COUNT and d.count == 1 and s["crashLoop"]["checkpoint"] == X
    same, d = step(s, "a/0")  # the same attempt seen again: nothing new
    assert d.action == cl.IGNORE and same == s
    s, d = step(s, "b/0")
    assert d.action == cl.FALLBACK and "2 attempts in a row failed" in d.reason and "pod-b/0" in d.reason
    assert s["lastFallback"]["checkpoint"] == X and s["crashLoop"]["fallbacks"] == 1
    s2, d = step(s, "c/0", marked=True)  # a late pod of X: X is bad already
    assert d.action == cl.IGNORE and s2 == s


def test_a_newer_commit_resets_the_streak_and_the_fallbacks():
    s, _ = step({}, "a/0")
    s, d = step(s, "b/0", newest="0000000030-20260101T000000000000Z-cccccc")
    assert d.action == cl.RESET and s["crashLoop"] == {"fallbacks": 0}
    _, d = step({}, "z/0", newest="0000000030-20260101T000000000000Z-cccccc")
    assert d.action == cl.IGNORE  # nothing to reset


def test_fallbacks_used_up_hold_once_on_the_checkpoint_fallen_back_to():
    s, _ = step({}, "a/0")
    s, _ = step(s, "b/0")
    s = cl.record_next(s, X, W)
    assert s["lastFallback"] == {**s["lastFallback"], "next": W, "marked": True}
    s, d = step(s, "c/0", checkpoint=W, newest=W)
    assert d.action == cl.COUNT and s["crashLoop"]["fallbacks"] == 1
    s, d = step(s, "d/0", checkpoint=W, newest=W)
    assert d.action == cl.HOLD and "2 attempts" in d.reason
    _, d = step(s, "e/0", checkpoint=W, newest=W)
    assert d.action == cl.IGNORE  # reported once


def test_a_streak_on_a_checkpoint_committed_since_starts_with_no_fallbacks_used():
    s, _ = step({}, "a/0")
    s, _ = step(s, "b/0")
    s = cl.record_next(s, X, W)
    newer = "0000000040-20260101T000000000000Z-dddddd"
    s, _ = step(s, "c/0", checkpoint=newer, newest=newer)
    s, d = step(s, "d/0", checkpoint=newer, newest=newer)
    assert d.action == cl.FALLBACK


@pytest.mark.parametrize("threshold, marked", [(0, False), (2, True)])
def test_off_or_already_bad(threshold, marked):
    s, d = step({}, "a/0", threshold=threshold, marked=marked)
    assert d.action == cl.IGNORE and s == {}


def test_threshold_one_falls_back_on_the_first_failure():
    _, d = step({}, "a/0", threshold=1)
    assert d.action == cl.FALLBACK


def test_undo_withdraws_an_unmarked_claim_only():
    s, _ = step({}, "a/0")
    s, _ = step(s, "b/0")
    undone = cl.undo_fallback(s, X)
    assert "lastFallback" not in undone and undone["crashLoop"]["fallbacks"] == 0
    assert cl.undo_fallback(cl.record_next(s, X, W), X) is None
