"""Where a restore step got its checkpoint, as the operator reads it from the pod status (pure parts)."""

from __future__ import annotations

import json

from kresume.operator.restores import RECENT_PODS, record_restore, restore_result


def _pod(message: str | None, exit_code: int = 0, name: str = "kresume-restore") -> dict:
    term = {"exitCode": exit_code, **({"message": message} if message is not None else {})}
    return {"status": {"initContainerStatuses": [{"name": name, "state": {"terminated": term}}]}}


def test_restore_result_reads_the_termination_message_of_a_successful_restore_step():
    msg = json.dumps({"source": "cache", "checkpoint": "x", "bytes": 10, "seconds": 0.4})
    assert restore_result(_pod(msg)) == {"source": "cache", "checkpoint": "x", "bytes": 10, "seconds": 0.4}
    assert restore_result(_pod(msg, exit_code=1)) is None
    assert restore_result(_pod(None)) is None
    assert restore_result(_pod("not json")) is None
    assert restore_result(_pod(json.dumps({"source": "elsewhere"}))) is None
    assert restore_result(_pod(msg, name="other")) is None
    assert restore_result({"status": {}}) is None


def test_record_restore_counts_each_pod_once_by_source():
    s = record_restore(None, "p1", {"source": "cache", "checkpoint": "c", "bytes": 5, "seconds": 0.5}, "t1")
    assert s["restores"]["cache"] == 1 and s["restores"]["last"] == {
        "pod": "p1", "source": "cache", "time": "t1", "checkpoint": "c", "bytes": 5, "seconds": "0.5"}
    assert record_restore(s, "p1", {"source": "cache"}, "t2") is None  # an operator restart lists p1 again
    s = record_restore(s, "p2", {"source": "store"}, "t3")
    assert (s["restores"]["cache"], s["restores"]["store"]) == (1, 1) and s["restores"]["pods"] == ["p1", "p2"]
    for i in range(3, 3 + RECENT_PODS):
        s = record_restore(s, f"p{i}", {"source": "store"}, "t")
    assert len(s["restores"]["pods"]) == RECENT_PODS and "p1" not in s["restores"]["pods"]
