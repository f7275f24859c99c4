"""The demo reads trainer events from containerd's CRI log files (pure decoding, and a file read in pieces), and
keeps a copy of the sidecar's that outlives the pod (the time line's final commit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from kresume.devtools.demo import timeline
from kresume.devtools.demo.kubeletpods import CriLog, CriMirror, KubeletPod, decode_cri_lines


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


def _cri(stream: str, tag: str, text: str, at: str = "2026-12-02T07:00:00.000000001Z") -> bytes:
    return f"{at} {stream} {tag} {text}\n".encode()


def test_the_mirror_copies_whole_lines_as_they_come_and_keeps_a_split_character_whole(tmp_path: Path) -> None:
    src, dest = tmp_path / "pods" / "0.log", tmp_path / "mirror" / "p" / "kresume-sidecar.log"
    mirror = CriMirror(CriLog(src), dest)
    assert mirror.sync() == 0 and not dest.exists()  # the container has not started: nothing, no file
    src.parent.mkdir(parents=True)
    data = _cri("stderr", "F", '{"msg": "uploading a → b"}') + _cri("stdout", "P", "long ") + _cri("stdout", "F", "line")
    cut = data.index("→".encode()) + 1  # inside the arrow's three bytes
    src.write_bytes(data[:cut])
    assert mirror.sync() == 0 and not dest.exists()
    src.write_bytes(data[: data.index(b"long")])  # the first record whole, the P record not yet written
    assert mirror.sync() == 1
    assert dest.read_text(encoding="utf-8") == '{"msg": "uploading a → b"}\n'
    src.write_bytes(data)
    assert mirror.sync() == 1 and mirror.sync() == 0
    assert dest.read_text(encoding="utf-8").splitlines() == ['{"msg": "uploading a → b"}', "long line"]


def _pod(uid: str, name: str, statuses: list[dict]) -> dict:
    return {"metadata": {"uid": uid, "name": name, "namespace": "ns"}, "spec": {},
            "status": {"phase": "Running", "containerStatuses": statuses}}  # fmt: skip


def test_the_time_line_finds_the_final_commit_in_the_mirror_after_the_kubelet_removed_the_pods_logs(
        tmp_path: Path) -> None:  # fmt: skip
    """The real node's shapes end to end in :func:`timeline.collect`: the old pod's CRI logs (deleted with the
    pod), its sidecar's mirror, and the operator's log as ``kubectl logs --timestamps`` gives it."""
    node_logs = tmp_path / "var-log-pods"
    old = KubeletPod(_pod("u1", "train-a", [
        {"name": "trainer", "state": {"terminated": {"startedAt": "2026-12-02T07:00:00Z",
                                                     "finishedAt": "2026-12-02T07:01:00Z"}}},
        {"name": "kresume-sidecar", "state": {"running": {"startedAt": "2026-12-02T07:00:00Z"}}}]),
        tmp_path / "kubelet", node_logs)  # fmt: skip
    old.mirror(tmp_path / "sidecar-logs")
    sidecar = old.log_path("kresume-sidecar")
    sidecar.parent.mkdir(parents=True)
    commit = json.dumps({"ts": "2026-12-02T07:01:01.500Z", "msg": "committed preempted-step=7.ckpt as 7-x (step 7)"})
    sidecar.write_bytes(_cri("stderr", "F", commit))
    trainer = old.log_path("trainer")
    trainer.parent.mkdir(parents=True)
    preempted = json.dumps({"event": "preempted", "checkpoint": "preempted-step=7.ckpt", "signal_at": 1796194859.5})
    exited = json.dumps({"event": "exit", "time": 1796194860.7})  # after finishedAt's truncated 07:01:00
    trainer.write_bytes(_cri("stdout", "F", preempted) + _cri("stdout", "F", exited))
    old_log = CriLog(trainer)
    old_log.read()
    old.sync_mirrors()
    old.update(None)
    shutil.rmtree(old.logs_dir)  # kubelet v1.20: the pod is gone, and so is its log folder

    new = KubeletPod(_pod("u2", "train-b", [
        {"name": "trainer", "state": {"running": {"startedAt": "2026-12-02T07:01:04Z"}}}]), tmp_path / "kubelet",
        node_logs)  # fmt: skip
    new_log = CriLog(tmp_path / "none.log")
    new_log.events += [{"event": "launched", "time": 1796194864.2},
                       {"event": "start", "time": 1796194870.0, "global_step": 7, "imports_s": 5.0, "load_s": 0.5},
                       {"event": "progress", "time": 1796194870.4, "global_step": 8}]  # fmt: skip
    operator_log = tmp_path / "operator.log"
    operator_log.write_text(
        "2026-12-02T07:01:03.250000000Z 2026-12-02 02:01:03,250 INFO kresume.operator.admission: inject-pod "
        "ns/run: injected (checkpoint from memory) in 3.0 ms (store 0.0 ms)\n")
    got = timeline.collect(SimpleNamespace(runner=old, log=old_log), SimpleNamespace(runner=new, log=new_log),
                           sigterm=1796194859.0, operator_log=operator_log, namespace="ns", run="run",
                           admission_window=(1796194862.0, 1796194864.0))  # fmt: skip
    assert got["raw"]["final_commit"] == 1796194861.5 and got["raw"]["trainer_exit"] == 1796194860.7
    assert got["sigterm_to_trainer_exit_s"] == 1.2
    assert got["final_commit_s"] == 0.8 and got["answer"] == "injected/memory" and got["admission_s"] == 0.003
    assert got["raw"]["admitted"] == 1796194863.25
    assert got["replacement_created_s"] is not None and got["pod_start_s"] is not None
