"""A legacy-mode sidecar leaves once the trainer will not run again (kresume.sidecar.leaving): the pure rule, and
real sidecar processes next to real torch trainer processes that hold the trainer lock (via resume_from()) and end
by finishing or crashing, for each restartPolicy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kresume import contract
from kresume.sidecar.leaving import FINISHED, TrainerWatch, leaves
from kresume.sidecar.presence import Trainer, probe
from kresume.store import layout
from sidecar.multirank_support import rank_run

HERE = Path(__file__).parent
TRAINER = HERE / "leaving_trainer.py"
T0 = 1000.0


def _watch(*seen: Trainer, started: float = T0, at: float = 0.0) -> TrainerWatch:
    w = TrainerWatch(started_wall=started)
    for i, t in enumerate(seen):
        w.observe(t, now=at + i)
    return w


HELD, FREE, NONE = Trainer(True), Trainer(False), Trainer(None)
FREE_FINISHED = Trainer(False, {"state": FINISHED, "written_at": T0 + 5})


# --- the pure rule ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["", "Always"])
def test_always_or_unset_never_leaves(policy):
    w = _watch(HELD, FREE_FINISHED)
    assert leaves(policy, w, now=100, settle_seconds=0) is None


def test_never_leaves_once_the_lock_seen_held_has_been_free_for_the_settle_time():
    w = _watch(HELD, FREE)  # free since t=1
    assert leaves("Never", w, now=1.5, settle_seconds=2) is None
    why = leaves("Never", w, now=3.0, settle_seconds=2)
    assert why is not None and "Never" in why


def test_never_stays_while_the_lock_is_held_whatever_the_notice_says():
    for notice in ({"state": "saving"}, {"state": FINISHED}, None):
        w = _watch(HELD, Trainer(True, notice))
        assert leaves("Never", w, now=100, settle_seconds=0) is None


def test_a_trainer_that_never_took_the_lock_keeps_the_old_behaviour():
    assert leaves("Never", _watch(NONE, NONE), now=100, settle_seconds=0) is None
    assert leaves("Never", _watch(FREE, FREE), now=100, settle_seconds=0) is None  # a lock file of an older pod


def test_a_notice_written_after_the_sidecar_started_proves_a_trainer_ran_between_two_probes():
    assert leaves("Never", _watch(FREE_FINISHED), now=100, settle_seconds=0) is not None
    old = Trainer(False, {"state": FINISHED, "written_at": T0 - 50})  # left on a volume by an earlier pod
    assert leaves("Never", _watch(old), now=100, settle_seconds=0) is None


def test_a_free_lock_whose_holder_wrote_this_pods_uid_was_this_pods_trainer():
    mine = Trainer(False, None, {"pod_uid": "uid-1", "pid": 7})
    w = TrainerWatch(started_wall=T0, pod_uid="uid-1")
    w.observe(mine, now=0)
    assert leaves("Never", w, now=5, settle_seconds=2) is not None
    other = TrainerWatch(started_wall=T0, pod_uid="uid-2")  # a lock left on a persistent volume by another pod
    other.observe(mine, now=0)
    assert leaves("Never", other, now=5, settle_seconds=2) is None
    unknown = TrainerWatch(started_wall=T0)  # no KRESUME_POD_UID (outside the operator): proves nothing
    unknown.observe(Trainer(False, None, {"pod_uid": ""}), now=0)
    assert leaves("Never", unknown, now=5, settle_seconds=2) is None


def test_the_lock_taken_again_restarts_the_settle_time():
    w = _watch(HELD, FREE, HELD, FREE)  # free since t=3 (a second process of the container took it at t=2)
    assert w.free_for(4.0) == 1.0
    assert leaves("Never", w, now=4.0, settle_seconds=2) is None
    assert leaves("Never", w, now=5.0, settle_seconds=2) is not None
    w.observe(NONE, now=6.0)  # lock file gone: nothing known
    assert leaves("Never", w, now=9.0, settle_seconds=0) is None


def test_on_failure_leaves_only_after_a_finished_notice():
    crashed = _watch(HELD, Trainer(False, {"state": "saving", "written_at": T0 + 1}))
    assert leaves("OnFailure", crashed, now=100, settle_seconds=0) is None  # the kubelet restarts it in place
    assert leaves("OnFailure", _watch(HELD, FREE), now=100, settle_seconds=0) is None
    why = leaves("OnFailure", _watch(HELD, FREE_FINISHED), now=100, settle_seconds=0)
    assert why is not None and "finished" in why


def test_never_says_how_the_trainer_ended():
    died = _watch(HELD, Trainer(False, {"state": "saving"}))
    assert "died during its final save" in leaves("Never", died, now=100, settle_seconds=0)


def test_a_flush_begun_because_the_trainer_left_is_called_off_when_its_lock_is_held_again():
    import logging

    from kresume.sidecar.ledger import Ledger
    from kresume.sidecar.metrics import Health
    from kresume.sidecar.shutdown import Shutdown
    from kresume.store.deadline import Deadline

    requests = Deadline("test")
    sd = Shutdown(5.0, Ledger(), Health(stale_after=30), logging.getLogger("test"), lambda: None, requests)
    sd.leave(600.0, "the trainer ended")
    assert sd.deadline is not None and sd.leaving and 590 < requests.remaining() < 600
    sd.leave(1.0, "again")  # no-op: one flush at a time
    assert sd.deadline - time.monotonic() > 590
    assert sd.stay("held again") is True
    assert sd.deadline is None and sd.leaving is None and requests.remaining() is None  # store requests unbounded
    assert sd.stay("held again") is False  # nothing to call off


# --- real processes -----------------------------------------------------------------------------------------
def _trainer(out: Path, run, *args: str) -> subprocess.Popen:
    url, options, env, _ = run
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1", contract.ENV_CHECKPOINT_DIR: str(out),
            contract.ENV_RUN_URL: url, contract.ENV_STORAGE_OPTIONS: json.dumps(options)}
    return subprocess.Popen([sys.executable, str(TRAINER), str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full)


def _events(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, list[dict]]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, [json.loads(x) for x in out.splitlines() if x.startswith("{")] + [{"stderr": err}]


def test_hold_for_life_writes_the_pod_uid_in_the_lock_and_the_probe_reads_it(tmp_path):
    code = ("import os, sys; os.environ['KRESUME_POD_UID'] = 'uid-9'; from kresume.preemption import hold_for_life;"
            "assert hold_for_life(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    seen = probe(str(tmp_path))
    assert seen.alive is False and seen.holder["pod_uid"] == "uid-9"


def _sidecar(start_sidecar, watch: Path, run, policy: str | None):
    flags = ("--leave-settle-seconds", "0.5", "--presence-seconds", "0.2", "--grace-seconds", "10")
    if policy is not None:
        flags += ("--restart-policy", policy)
    return start_sidecar(watch, run, *flags)


def _wait_exit(sc, timeout: float = 90) -> tuple[int, str]:
    try:
        rc = sc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the sidecar did not leave; tail:\n{sc.tail()}") from None
    return rc, sc.out_path.read_text()


def _still_running(sc, seconds: float) -> None:
    """The sidecar is alive ``seconds`` after the trainer ended (well beyond settle + probe period)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert sc.proc.poll() is None, f"the sidecar left, rc={sc.proc.returncode}; tail:\n{sc.tail()}"
        time.sleep(0.2)


@pytest.mark.parametrize("end", ["finish", "kill"])
def test_never_a_trainer_that_finished_or_died_lets_the_sidecar_commit_everything_and_exit_0(
        tmp_path, moto_run, start_sidecar, end):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = _sidecar(start_sidecar, watch, moto_run, "Never")
    sc.wait_log(lambda r: "watching" in r.get("msg", ""))
    # The last save is half-written for 2 s, four times the settle time: the lock is held, so the sidecar stays.
    rc, events = _events(_trainer(watch, moto_run, "--steps", "6", "--every", "2", "--end", end,
                                  "--last-save-seconds", "2"))
    assert rc == (0 if end == "finish" else -signal.SIGKILL), events[-1]
    assert [e["name"] for e in events if e.get("event") == "saved"] == ["step=2.pt", "step=4.pt", "step=6.pt"]
    rc, out = _wait_exit(sc)
    assert rc == 0 and "committed=3" in out, (out, sc.tail())
    committed = {m.name for m in moto_run[3].list()}
    assert committed == {"step=2.pt", "step=4.pt", "step=6.pt"}
    left = sc.wait_log(lambda r: "committing what is complete" in r.get("msg", ""))
    assert "restartPolicy Never" in left["msg"]


def test_never_a_crashed_trainer_frees_the_sidecar_and_nothing_half_written_is_committed(
        tmp_path, moto_run, start_sidecar):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = _sidecar(start_sidecar, watch, moto_run, "Never")
    rc, _ = _events(_trainer(watch, moto_run, "--steps", "4", "--every", "2", "--end", "crash"))
    assert rc == 1
    (watch / "step=6.pt").write_bytes(b"PK\x03\x04 half a zip")  # what a save killed half-way leaves
    rc, out = _wait_exit(sc)
    assert rc == 0, sc.tail()
    assert {m.name for m in moto_run[3].list()} == {"step=2.pt", "step=4.pt"}


def test_on_failure_stays_through_a_crash_and_leaves_after_the_restarted_trainer_finished(
        tmp_path, moto_run, start_sidecar):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = _sidecar(start_sidecar, watch, moto_run, "OnFailure")
    rc, _ = _events(_trainer(watch, moto_run, "--steps", "2", "--every", "2", "--end", "crash"))
    assert rc == 1
    _still_running(sc, 2.0)  # the kubelet restarts a failed trainer in place: it needs its sidecar
    # The restarted trainer resumes from what the sidecar committed, finishes, says so, exits 0.
    rc, events = _events(_trainer(watch, moto_run, "--steps", "4", "--every", "2", "--end", "exit", "--finished"))
    assert rc == 0, events[-1]
    assert events[0]["resumed"].endswith("step=2.pt"), events[0]
    rc, out = _wait_exit(sc)
    assert rc == 0 and "committed=2" in out, (out, sc.tail())
    assert {m.name for m in moto_run[3].list()} == {"step=2.pt", "step=4.pt"}


def test_on_failure_without_a_finished_notice_the_sidecar_stays(tmp_path, moto_run, start_sidecar):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = _sidecar(start_sidecar, watch, moto_run, "OnFailure")
    rc, _ = _events(_trainer(watch, moto_run, "--steps", "2", "--every", "2", "--end", "exit"))
    assert rc == 0
    _still_running(sc, 2.0)
    rc, out = sc.stop()
    assert rc == 0 and "committed=1" in out


@pytest.mark.parametrize("policy", ["Always", None])
def test_always_or_native_mode_the_sidecar_runs_until_sigterm(tmp_path, moto_run, start_sidecar, policy):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = _sidecar(start_sidecar, watch, moto_run, policy)
    rc, _ = _events(_trainer(watch, moto_run, "--steps", "2", "--every", "2", "--end", "exit", "--finished"))
    assert rc == 0
    _still_running(sc, 2.0)
    rc, out = sc.stop()
    assert rc == 0 and "committed=1" in out


def test_a_sigterm_during_the_flush_after_the_trainer_left_shortens_it_to_the_grace_period(
        tmp_path, moto_run, start_sidecar):
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = start_sidecar(watch, moto_run, "--restart-policy", "Never", "--leave-settle-seconds", "0",
                       "--presence-seconds", "0.2", "--grace-seconds", "2")
    rc, _ = _events(_trainer(watch, moto_run, "--steps", "2", "--every", "2", "--end", "exit"))
    assert rc == 0
    sc.wait_log(lambda r: "committing what is complete" in r.get("msg", ""))
    rc, out = sc.stop(timeout=30)
    assert rc == 0 and "kresume sidecar: committed=" in out


def test_two_ranks_the_first_sidecar_to_lose_its_trainer_waits_for_the_others_part_then_both_leave(
        tmp_path, moto_run, start_sidecar):
    """Multi-rank, ``restartPolicy: Never``: rank 0's trainer ends first; its sidecar has recorded its part of
    step 2, which waits for rank 1's, so it stays (within ``--leave-parts-seconds``) instead of leaving the step to
    nobody; once rank 1's trainer ends the step commits and both sidecars exit 0."""
    epoch = layout.new_epoch_token()
    watches = [tmp_path / f"r{r}" for r in (0, 1)]
    sidecars = []
    for r, w in enumerate(watches):
        w.mkdir()
        run = rank_run(moto_run, r, epoch)
        run = (run[0], run[1], {**run[2], contract.ENV_PARTS: "all-ranks"}, run[3])
        sidecars.append(_sidecar(start_sidecar, w, run, "Never"))
    for sc in sidecars:
        sc.wait_log(lambda r: "watching" in r.get("msg", ""))
    rc, _ = _events(_trainer(watches[0], moto_run, "--steps", "2", "--every", "2", "--end", "exit", "--rank", "0"))
    assert rc == 0
    sidecars[0].wait_log(lambda r: r.get("msg", "").startswith("recorded rank 0's part"))
    _still_running(sidecars[0], 2.0)  # its trainer is gone, but its step waits for rank 1's part
    assert moto_run[3].manifest_ids() == []
    rc, _ = _events(_trainer(watches[1], moto_run, "--steps", "2", "--every", "2", "--end", "kill", "--rank", "1"))
    assert rc == -signal.SIGKILL
    for sc in sidecars:
        rc, _ = _wait_exit(sc)
        assert rc == 0, sc.tail()
    assert len(moto_run[3].manifest_ids()) == 1, sidecars[0].tail() + "\n\n" + sidecars[1].tail()
    (cid,) = moto_run[3].manifest_ids()
    assert moto_run[3].latest().step == 2 and moto_run[3].read_pointer().checkpoint == cid


REPO = HERE.parent.parent


@pytest.mark.parametrize("kind", ["lightning", "hf"])
def test_on_failure_a_lightning_or_hf_fit_that_ends_normally_records_finished_and_frees_the_sidecar(
        tmp_path, moto_run, start_sidecar, kind):
    """The hooks call ``training_finished()`` at the end of a fit not stopped by SIGTERM (Lightning ``on_fit_end``,
    HF ``on_train_end``): under ``OnFailure`` that is what lets the sidecar leave once the process exits 0."""
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = _sidecar(start_sidecar, watch, moto_run, "OnFailure")
    url, options, env, store = moto_run
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1", contract.ENV_CHECKPOINT_DIR: str(watch),
            contract.ENV_RUN_URL: url, contract.ENV_STORAGE_OPTIONS: json.dumps(options)}
    argv = ([sys.executable, str(REPO / "examples" / "lightning" / "train.py"), "--max-steps", "4",
             "--every-n-steps", "2", "--ckpt-dir", str(watch)] if kind == "lightning"
            else [sys.executable, str(HERE / "preempt_trainers.py"), "hf", str(watch), "--steps", "10"])
    out = subprocess.run(argv, capture_output=True, text=True, env=full, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    notice = json.loads((watch / contract.TRAINER_NOTICE).read_text())
    assert notice["state"] == FINISHED and notice["step"] == (4 if kind == "lightning" else 10), notice
    rc, summary = _wait_exit(sc)
    assert rc == 0, sc.tail()
    assert store.list() and "abandoned=0" in summary, (summary, sc.tail())
