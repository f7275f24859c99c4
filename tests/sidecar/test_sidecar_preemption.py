"""Save on SIGTERM, commit within the grace period (issue 15 item 1), at process level: the sidecar (a real
process on moto S3) beside a real trainer using a kresume hook (plain loop, HF Trainer), both signalled the way
a kubelet does it (legacy mode: at once; native mode: the sidecar after the trainer exited).

The Kubernetes end of it (control plane, operator, node agent, a real Lightning Job) is tests/e2e/, which also
holds the grace period too short for the upload (on SeaweedFS, whose bandwidth makes it deterministic; moto's
in-memory uploads here are fast enough to fit a 1 s grace period now and then).
"""

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

TRAINERS = Path(__file__).with_name("preempt_trainers.py")


class Trainer:
    """One trainer process of preempt_trainers.py; stdout JSON events in ``events``."""

    def __init__(self, kind: str, out: Path, workdir: Path, *args: str) -> None:
        self.log = workdir / f"trainer-{kind}-{time.monotonic_ns()}.log"
        self.err = self.log.with_suffix(".err")
        self._f, self._e = open(self.log, "w"), open(self.err, "w")
        self.proc = subprocess.Popen([sys.executable, str(TRAINERS), kind, str(out), *args], stdout=self._f,
                                     stderr=self._e, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def events(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_event(self, pred, timeout: float = 180.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for ev in self.events():
                if pred(ev):
                    return ev
            assert self.proc.poll() is None, f"trainer exited {self.proc.returncode}:\n{self.tail()}"
            time.sleep(0.05)
        raise AssertionError(f"no such trainer event; log:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-1500:] + "\n--- stderr:\n" + self.err.read_text()[-3000:]

    def last_step(self) -> int:
        return max((e["step"] for e in self.events() if e.get("event") == "step"), default=0)

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._f.close()
        self._e.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def start_trainer(tmp_path):
    started: list[Trainer] = []

    def start(kind: str, out: Path, *args: str) -> Trainer:
        t = Trainer(kind, out, tmp_path, *args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def _messages(sc) -> list[str]:
    return [r.get("msg", "") for r in sc.logs()]


def _wait_commits(store, n: int, timeout: float = 90.0) -> list:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ms = store.list()
        if len(ms) >= n:
            return ms
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} commits: {[m.name for m in store.list()]}")


def test_legacy_mode_the_sidecar_waits_for_the_trainers_final_save_and_commits_it(tmp_path, moto_run, start_sidecar,
                                                                                   start_trainer):
    """Both get SIGTERM at once; the trainer's save takes 1.5 s (a big model). Without the presence lock the sidecar
    would see nothing pending and exit before the save exists; with it, it waits and commits the final save."""
    watch = tmp_path / "ckpt"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run, "--grace-seconds", "20")
    trainer = start_trainer("plain", watch, "--every", "10", "--mb", "1", "--save-delay", "1.5")
    trainer.wait_event(lambda e: e.get("event") == "saved" and e["step"] == 10)
    _wait_commits(store, 1)
    trainer.wait_event(lambda e: e.get("event") == "step" and e["step"] % 10 == 4)  # mid-way between saves
    for proc in (trainer.proc, sc.proc):
        proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert trainer.wait() == contract.PREEMPTED_EXIT_CODE
    rc, out = sc.exited(timeout=60)
    took = time.monotonic() - t0
    last = trainer.last_step()
    latest = store.latest()
    assert latest is not None and latest.manifest.name == f"preempted-step={last}.pt", (latest, sc.tail())
    assert latest.step == last
    assert rc == 0 and "committed=" in out
    msgs = _messages(sc)
    assert any(m.startswith("trainer still running (saving)") for m in msgs), sc.tail()
    assert any(m.startswith("trainer exited (final save: saved, preempted-step=") for m in msgs), sc.tail()
    assert took < 20, f"the sidecar waited its whole grace period ({took:.1f} s) although the trainer was done"
    notice = json.loads((watch / contract.TRAINER_NOTICE).read_text())
    assert notice["state"] == "saved" and notice["step"] == last and notice["saved_at"] - notice["signal_at"] >= 1.5


def test_a_trainer_killed_during_its_final_save_releases_the_sidecar_and_nothing_partial_is_committed(
        tmp_path, moto_run, start_sidecar, start_trainer):
    """SIGKILL in the middle of the final save (a node's SIGKILL at the grace deadline): the kernel drops the lock,
    the sidecar stops waiting at once (long before its 30 s grace) and the pointer stays on the last whole save."""
    watch = tmp_path / "ckpt"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run, "--grace-seconds", "30")
    trainer = start_trainer("plain", watch, "--every", "10", "--mb", "1", "--save-delay", "3")
    trainer.wait_event(lambda e: e.get("event") == "saved" and e["step"] == 10)
    before = _wait_commits(store, 1)[-1]
    trainer.wait_event(lambda e: e.get("event") == "step" and e["step"] >= 12)
    trainer.proc.send_signal(signal.SIGTERM)
    sc.proc.send_signal(signal.SIGTERM)
    sc.wait_log(lambda r: r.get("msg", "").startswith("trainer still running (saving)"), 30)
    t0 = time.monotonic()
    trainer.proc.kill()
    trainer.wait()
    rc, _ = sc.exited(timeout=60)
    assert rc == 0
    assert time.monotonic() - t0 < 15, "the sidecar kept waiting for a trainer that was gone"
    assert any(m.startswith("trainer exited (final save: saving)") for m in _messages(sc)), sc.tail()
    latest = store.latest()
    assert latest is not None and latest.checkpoint_id == before.id
    assert [m.name for m in store.list()] == [before.name]
    assert not any(p.name.startswith("preempted") for p in watch.iterdir())


def test_native_mode_the_sidecar_commits_the_final_save_and_counts_its_deadline_from_the_trainers_signal(
        tmp_path, moto_run, start_sidecar, start_trainer):
    """Kubelet ≥ 1.29 stops a native sidecar only after the trainer exited, within the same grace period: the
    sidecar (still running normally) commits the final save, and on its own SIGTERM it knows how much of the
    grace period the trainer already used (the notice's ``signal_at``)."""
    watch = tmp_path / "ckpt"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run, "--grace-seconds", "12")
    trainer = start_trainer("plain", watch, "--every", "10", "--mb", "1", "--save-delay", "2")
    trainer.wait_event(lambda e: e.get("event") == "saved" and e["step"] == 10)
    trainer.wait_event(lambda e: e.get("event") == "step" and e["step"] >= 13)
    trainer.proc.send_signal(signal.SIGTERM)
    assert trainer.wait() == contract.PREEMPTED_EXIT_CODE
    last = trainer.last_step()
    sc.wait_log(lambda r: r.get("msg", "").startswith(f"committed preempted-step={last}.pt"), 60)
    signal_at = json.loads((watch / contract.TRAINER_NOTICE).read_text())["signal_at"]
    rc, out = sc.stop(timeout=60)  # one SIGTERM: a second one ends the sidecar at once (the contract)
    assert rc == 0
    used = time.time() - signal_at
    line = next((m for m in _messages(sc) if m.startswith("the trainer got SIGTERM")), None)
    assert line is not None, sc.tail()
    left = float(line.split(": ")[1].split(" s ")[0])
    assert left <= 12 - 2 + 0.5, line  # the trainer's save alone took 2 s of the 12
    assert used >= 2
    assert store.latest().manifest.name == f"preempted-step={last}.pt"


@pytest.mark.timeout(900)
def test_hf_trainer_callback_saves_on_sigterm_and_exits_143(tmp_path, moto_run, start_sidecar, start_trainer):
    """A real HF Trainer with ``kresume.hf.PreemptionCallback``: SIGTERM mid-run → ``checkpoint-<last step>``
    saved at once and committed by the sidecar (legacy mode: both signalled together); exit status 143."""
    watch = tmp_path / "hf"
    watch.mkdir()
    store = moto_run[3]
    sc = start_sidecar(watch, moto_run, "--grace-seconds", "20")
    trainer = start_trainer("hf", watch, "--steps", "2000")
    trainer.wait_event(lambda e: e.get("event") == "saved" and e["step"] == 10, 300)
    trainer.wait_event(lambda e: e.get("event") == "step" and e["step"] % 10 == 3)
    t_sig = time.time()
    for proc in (trainer.proc, sc.proc):
        proc.send_signal(signal.SIGTERM)
    assert trainer.wait(120) == contract.PREEMPTED_EXIT_CODE
    rc, _ = sc.exited(timeout=60)
    assert rc == 0
    last = trainer.last_step()
    saved = [e for e in trainer.events() if e.get("event") == "saved"]
    assert saved[-1]["step"] == last and saved[-1]["time"] - t_sig < 3, saved
    assert not any(e.get("event") == "returned" for e in trainer.events())
    latest = store.latest()
    assert latest is not None and latest.manifest.name == f"checkpoint-{last}" and latest.step == last, sc.tail()
    assert "trainer_state.json" in {f.path for f in latest.manifest.files}


@pytest.mark.timeout(900)
def test_hf_enable_jit_checkpoint_waits_3_s_and_lets_the_script_exit_0(tmp_path, start_trainer):
    """What transformers' own ``enable_jit_checkpoint`` does here (documented in kresume/hf.py and docs): it saves
    ``checkpoint-N`` about 3 s after SIGTERM (its ``kill_wait``), possibly before the optimizer step of a step that
    then completes (N = last step - 1), and ``train()`` returns, so the script ends with status 0 — a Job may then
    count a preempted pod as Succeeded."""
    out = tmp_path / "jit"
    trainer = start_trainer("hf-jit", out, "--steps", "2000")
    trainer.wait_event(lambda e: e.get("event") == "step" and e["step"] >= 3, 300)
    t_sig = time.time()
    trainer.proc.send_signal(signal.SIGTERM)
    assert trainer.wait(120) == 0
    events = trainer.events()
    assert any(e.get("event") == "returned" for e in events)
    # Its save bypasses on_save: judge it from the folder it wrote (trainer_state.json is written last).
    newest = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    delay = (newest / "trainer_state.json").stat().st_mtime - t_sig
    assert delay >= 2.5, f"{newest.name} written {delay:.2f} s after SIGTERM"
    # It may save in on_pre_optimizer_step: before the optimizer step of the step then finished (not saved).
    assert int(newest.name.split("-")[1]) in (trainer.last_step(), trainer.last_step() - 1)
    print(f"enable_jit_checkpoint: {newest.name} written {delay:.2f} s after SIGTERM (last step "
          f"{trainer.last_step()}); exit status 0")
