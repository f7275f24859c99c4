"""The demo reads trainer events from containerd's CRI log files (pure decoding, and a file read in pieces)."""

from __future__ import annotations

import json
from pathlib import Path

from kresume.devtools.demo.kubeletpods import CriLog, KubeletPod, decode_cri_lines


def test_decode_joins_partial_lines_and_keeps_text_after_the_third_space() -> None:
    data = ("2026-12-01T00:00:00.1Z stdout P {\"event\": \n"
            "2026-12-01T00:00:00.2Z stdout F \"start\"}\n"
            "2026-12-01T00:00:00.3Z stderr F a  b c\n"
            "2026-12-01T00:00:00.4Z stdout P tail")  # fmt: skip
    lines, partial = decode_cri_lines(data, "")
    assert lines == ['{"event": "start"}', "a  b c"]
    assert partial == "tail"


def test_cri_log_consumes_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    event = json.dumps({"event": "progress", "global_step": 7})
    full = f"2026-12-01T00:00:00Z stdout F {event}\n"
    path.write_text(full[:25])
    log = CriLog(path)
    assert log.read() == []
    path.write_text(full + "2026-12-01T00:00:01Z stdout F not json\n")
    assert log.read() == [{"event": "progress", "global_step": 7}]
    assert log.last_step() == 7 and log.tail[-1] == "not json"


def test_pod_is_done_when_its_trainer_exited_although_the_sidecar_runs() -> None:
    pod = {"metadata": {"uid": "u", "name": "p", "namespace": "n"}, "spec": {}, "status": {"phase": "Running",
           "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": 0}}},
                                 {"name": "kresume-sidecar", "state": {"running": {}}}]}}  # fmt: skip
    runner = KubeletPod(pod, Path("/x"))
    runner.update(pod)
    assert runner.done.is_set() and runner.failed_at is None and runner.failed_containers() == []
    gone = KubeletPod(pod, Path("/x"))
    gone.update(None)
    assert gone.done.is_set() and gone.failed_at is not None
