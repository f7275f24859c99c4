"""Kubernetes faults (family ``k8s``): the operator killed, the API server restarted, the webhook unreachable.

Every session has its own namespace (labelled so the session's webhook configuration selects it), the
chart's RBAC and webhook configuration (``failurePolicy: Ignore``, timeout 10 s) around a real operator
process, a policy on the campaign's moto server and a run with committed checkpoints, the newest of them
marked bad. Pods are bare opted-in pods of that run (``kresume.dev/run``), created through the API as a
controller would; no kubelet runs them (creation and admission are what is under test).

What is read back afterwards, from the API server and the store:

- every create call succeeded within the webhook timeout plus a margin (``pod_blocked`` otherwise);
- a pod kresume injected names a committed, complete, not bad-marked checkpoint (``bad_injected``), and the
  newest valid one committed before its create call (``stale_injected``: an older one, or a fresh start);
- a pod kresume never saw (no ``kresume.dev/injected``) carries a ``KresumeNotInjected`` Warning once the
  operator runs again (``silent_outage``);
- after the fault, the same (or the restarted) operator process injects the next pod: recovered.

Sessions:

- ``operator_kill``: a burst of pod creations (4 threads); at a seeded moment inside it the operator's
  process group gets SIGKILL, and a new operator process starts on the same port and certificate (what the
  Deployment's restart does), while the burst goes on.
- ``apiserver_restart``: a sidecar (real process) commits the trainer's checkpoints into the run while
  kube-apiserver is stopped for 2-6 s and started again on the same etcd; then pods are created: they must
  get the newest commit (also one made during the outage) from the same operator process, and the run's
  ``CheckpointRun.status.latest`` must catch up.
- ``webhook_down``: pods created while the webhook cannot be reached — the operator stopped (connection
  refused), or the webhook configuration pointed at a port that accepts and never answers (the API server
  waits the timeout); then the operator is started again or the configuration restored.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from _fixtures.operator import kget
from faults import invariants as inv
from faults.cluster_session import RUN, Blackhole, ClusterSession
from faults.kinds import Tally
from faults.procs import Sidecar
from faults.store_faults import Profile
from faults.trainer import Trainer, Writing
from faults.world import World
from kresume import contract


def _burst(s: ClusterSession, stop: threading.Event, threads: int = 3) -> None:
    """Create pods from ``threads`` threads, one after another, until ``stop`` is set."""
    def loop() -> None:
        while not stop.is_set():
            s.create_pods(1, threads=1)
            stop.wait(0.15)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(600)


def operator_kill(world: World, faults: int, rng: random.Random, profile: Profile, workdir: Path) -> Tally:
    s = ClusterSession(world, "operator_kill", rng, workdir)
    t0 = time.monotonic()
    with s.up():
        for _ in range(faults):
            stop = threading.Event()
            burst = threading.Thread(target=_burst, args=(s, stop), daemon=True)
            before = len(s.created)
            burst.start()
            kill_after = rng.randint(2, 8)  # creates of this burst answered before the kill
            end = time.monotonic() + 60
            while len(s.created) - before < kill_after and time.monotonic() < end:
                time.sleep(0.02)
            s.kill_operator()
            s.tally.injected += 1
            time.sleep(rng.uniform(0.5, 3.0))
            took = s.restart_operator()
            after = len(s.created)
            while len(s.created) - after < 4 and time.monotonic() < end + 120:  # the burst goes on a while
                time.sleep(0.05)
            stop.set()
            burst.join(300)
            s.tally.notes.append(f"operator SIGKILLed after {kill_after} creates of a burst of "
                                 f"{len(s.created) - before}; serving TLS again {took:.1f} s after its restart")
        ok = s.injected_into_next_pod()
        s.tally.recovery["recovered" if ok else "needs restart"] += 1
        s.check()
    s.tally.committed = len(s.truth.manifest_ids())
    s.tally.seconds = time.monotonic() - t0
    return s.tally


def apiserver_restart(world: World, faults: int, rng: random.Random, profile: Profile, workdir: Path) -> Tally:
    s = ClusterSession(world, "apiserver_restart", rng, workdir)
    t0 = time.monotonic()
    watch = workdir / "watch"
    watch.mkdir(parents=True)
    with s.up():
        trainer = Trainer(watch, random.Random(rng.random()), sizes_mib=(1.0, 2.0), dcp_every=0)
        trainer._step = 30  # after the seeded checkpoints (steps 10-30)
        sc = Sidecar(watch, s.run_url, world.moto.storage_options, workdir, ["--concurrency", "2"])
        try:
            if not sc.watching():
                raise RuntimeError(f"the sidecar did not start:\n{sc.tail()}")
            with inv.PointerMonitor(s.truth) as monitor, \
                    Writing(trainer, profile.interval, random.Random(rng.random())):
                for _ in range(faults):
                    time.sleep(rng.uniform(1.0, 3.0))
                    down = rng.uniform(2.0, 6.0)
                    before = len(s.truth.manifest_ids())
                    took = s.cp.restart_apiserver(down_seconds=down)
                    s.tally.injected += 1
                    during = len(s.truth.manifest_ids()) - before
                    s.tally.notes.append(f"kube-apiserver down {down:.1f} s, ready {took:.1f} s after its start; "
                                         f"{during} commits meanwhile")
                    s.create_pods(3, threads=3)
            alive = s.operator.running
            caught_up = _status_catches_up(s, 90.0)
            if alive and caught_up and s.injected_into_next_pod():
                s.tally.recovery["recovered"] += 1
            else:
                s.tally.recovery["needs restart"] += 1
                s.tally.notes.append(f"after the restarts: operator alive {alive}, CheckpointRun status caught up "
                                     f"{caught_up}:\n{s.operator.tail(15)}")
            sc.terminate(30)
        finally:
            sc.kill()
        s.tally.violations += monitor.violations
        s.tally.violations += inv.checked(lambda: inv.manifest_violations(s.truth, {**s.seeded, **trainer.by_name()}))
        s.tally.violations += inv.checked(lambda: inv.lost_commit_violations(s.truth, sc.committed()))
        restore_v, _ = inv.restore_violations(s.truth, s.truth, {**s.seeded, **trainer.by_name()},
                                              workdir / "restored")
        s.tally.violations += restore_v
        s.check()
    s.tally.committed = len(s.truth.manifest_ids())
    s.tally.seconds = time.monotonic() - t0
    return s.tally


def _status_catches_up(s: ClusterSession, timeout: float) -> bool:
    """``CheckpointRun.status.latest`` names the newest valid checkpoint within ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        newest = s.newest_valid()
        try:
            run = kget(s.cp, contract.RUN_PLURAL, "-n", s.ns, RUN)
            url = ((run.get("status") or {}).get("latest") or {}).get("url", "")
        except Exception:  # noqa: BLE001 - not created yet, or the API server is busy
            url = ""
        if newest and newest in url:
            return True
        time.sleep(1.0)
    return False


def webhook_down(world: World, faults: int, rng: random.Random, profile: Profile, workdir: Path) -> Tally:
    s = ClusterSession(world, "webhook_down", rng, workdir)
    t0 = time.monotonic()
    with s.up():
        for i in range(faults):
            how = rng.choice(["stopped", "hangs"])
            if how == "stopped":
                s.operator.stop()
                made = s.create_pods(3, threads=3)
                s.restart_operator()
            else:
                hole = Blackhole()
                original = _webhook_url(s)
                try:
                    _set_webhook_url(s, original.replace(f":{s.op.port}/", f":{hole.port}/"))
                    time.sleep(2.0)  # the API server re-reads webhook configurations about every second
                    made = s.create_pods(3, threads=3)
                finally:
                    _set_webhook_url(s, original)
                    hole.close()
                time.sleep(2.0)
            s.tally.injected += 1
            s.tally.notes.append(f"outage {i} ({how}): creates took "
                                 f"{', '.join(f'{c.seconds:.1f}' for c in made)} s")
        ok = s.injected_into_next_pod()
        s.tally.recovery["recovered" if ok else "needs restart"] += 1
        s.check()
    s.tally.committed = len(s.truth.manifest_ids())
    s.tally.seconds = time.monotonic() - t0
    return s.tally


def _webhook_url(s: ClusterSession) -> str:
    cfg = kget(s.cp, "mutatingwebhookconfiguration", s.hook)
    return str(cfg["webhooks"][0]["clientConfig"]["url"])


def _set_webhook_url(s: ClusterSession, url: str) -> None:
    patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": url}]
    s.cp.kubectl("patch", "mutatingwebhookconfiguration", s.hook, "--type=json", "-p", json.dumps(patch))


def run_k8s_fault(world: World, kind: str, faults: int, rng: random.Random, profile: Profile,
                  workdir: Path) -> Tally:
    """One session of the Kubernetes fault ``kind``."""
    workdir.mkdir(parents=True, exist_ok=True)
    fn = {"operator_kill": operator_kill, "apiserver_restart": apiserver_restart, "webhook_down": webhook_down}[kind]
    return fn(world, faults, rng, profile, workdir)

