"""``kresume demo --ranks N``: a real N-rank torch.distributed run, one rank preempted again and again.

The run is a StatefulSet of N pods (``podManagementPolicy: OrderedReady``: one admission at a time) running
``examples/dcp/train.py``: gloo over loopback, rank 0's pod hosts the ``TCPStore`` on ``127.0.0.1:<master_port>``,
every rank ``dcp.save`` s into its own emptyDir, and its sidecar commits its part; the operator derives rank = ordinal and world size = replicas and gives
every pod admitted into one resume epoch the same ``KRESUME_EPOCH`` and checkpoint.

A preemption hits one rank's pod (seeded: which rank, which moment, :mod:`kresume.devtools.demo.chaos` modes). The
other ranks fail on the broken collective and exit non-zero. Then the demo deletes their pods (gracefully) and the
StatefulSet controller recreates them — a *gang restart*, what JobSet's ``failurePolicy`` or a PyTorchJob restart
does. It is needed: a trainer container restarted in place keeps its pod's ``KRESUME_EPOCH``, so its sidecar would
name the next steps' shared prefix with the old epoch and the new pods' parts would never meet it (the trainer
refuses to train across epochs: its ``epoch-mismatch`` exit). Each restart is checked by
:mod:`kresume.devtools.demo.rankchecks`: every rank resumed from the same step, the newest whole step.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kresume import contract
from kresume.devtools.demo import chaos, interrupt, rankchecks
from kresume.devtools.demo.observe import StorePoller, TrainerLog
from kresume.devtools.demo.report import Display
from kresume.devtools.demo.settings import DCP_TRAIN_SCRIPT, DemoSettings

TICK = 0.05
SURVIVOR_WAIT = 60.0
"""Seconds after a preemption (beyond the collective timeout) after which a rank that has not failed is deleted
anyway (and reported)."""
FINAL_COMMIT_WAIT = 60.0
"""Seconds the demo waits, after every rank reported ``done``, for the final step's commit."""


@dataclass
class RankPod:
    """One pod of the StatefulSet as the demo follows it (one per admission)."""

    runner: Any
    rank: int
    epoch: str
    log: TrainerLog
    injected_url: str | None
    injected_step: int | None
    start: dict[str, Any] | None = None
    done: bool = False
    deleted_at: float | None = None


@dataclass
class RankPreemption:
    """One preemption of one rank and the job's restart after it."""

    index: int
    mode: str
    rank: int
    pod: str
    at: float
    step: int | None
    moment: str
    epoch: str
    survivors: dict[int, str] = field(default_factory=dict)
    """rank -> how that rank's trainer ended (the broken collective) and when the demo deleted its pod."""
    last_step_before: int | None = None
    next_epoch: str | None = None
    resumed_steps: dict[int, int | None] = field(default_factory=dict)
    resumed_at: float | None = None

    @property
    def resumed_step(self) -> int | None:
        steps = set(self.resumed_steps.values())
        return steps.pop() if len(steps) == 1 else None

    @property
    def lost_steps(self) -> int | None:
        if self.last_step_before is None or self.resumed_step is None:
            return None
        return self.last_step_before - self.resumed_step


def statefulset_manifest(s: DemoSettings, trainer_env: list[dict[str, Any]]) -> dict[str, Any]:
    """The demo's apps/v1 StatefulSet: ``s.ranks`` replicas of the DCP trainer, opted in with the kresume label."""
    args = ["--max-steps", str(s.planned_steps), "--every-n-steps", str(s.every_n_steps),
            "--step-seconds", str(s.step_seconds), "--hidden", str(s.hidden), "--master-port", str(s.master_port),
            "--timeout", str(s.collective_timeout)]  # fmt: skip
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": s.job_name, "namespace": s.namespace},
        "spec": {"replicas": s.ranks, "serviceName": s.job_name, "podManagementPolicy": "OrderedReady",
                 "selector": {"matchLabels": {"app": s.job_name}},
                 "template": {"metadata": {"labels": {"app": s.job_name, contract.LABEL_INJECT: "true"}},
                              "spec": {"terminationGracePeriodSeconds": s.grace_seconds, "containers": [
                                  {"name": "trainer", "image": "kresume-demo/dcp-trainer:local",
                                   "command": list(s.trainer_command) or ["python", str(DCP_TRAIN_SCRIPT)],
                                   "args": args, "env": trainer_env}]}}},
    }  # fmt: skip


def target_ranks(count: int, seed: int, world_size: int) -> list[int]:
    """The rank each of ``count`` preemptions hits (seeded, uniform)."""
    rng = random.Random(f"{seed}:ranks")
    return [rng.randrange(world_size) for _ in range(count)]


class RanksDemo:
    """The multi-rank demo loop over a started :class:`~kresume.devtools.demo.stack.Stack` (module docstring)."""

    def __init__(self, settings: DemoSettings, stack: Any, display: Display) -> None:
        self.s, self.stack, self.d = settings, stack, display
        self.node = stack.node
        self.plan = chaos.plan(settings.preemptions, settings.seed, settings.every_n_steps, settings.modes)
        self.targets = target_ranks(len(self.plan), settings.seed, settings.ranks)
        self.pods: list[RankPod] = []
        self.rounds: dict[str, rankchecks.Round] = {}
        self.preemptions: list[RankPreemption] = []
        self.poller: StorePoller | None = None
        self.wholes: dict[str, rankchecks.Whole] = {}
        self._reported: set[str] = set()
        self._armed: dict[int, set[str]] = {}
        self._all_done_at: float | None = None
        self._unmutated: set[str] = set()
        self.notes: list[str] = []
        self.fatal: str | None = None
        """A failure that stops the demo at once (ranks in different resume epochs)."""
        """What happened that is not a failed check (a pod admitted without kresume's injection)."""

    # --- main loop ------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        s = self.s
        self.d.say(f"submitting StatefulSet {s.namespace}/{s.job_name}: {s.ranks} ranks of examples/dcp/train.py "
                   f"(gloo, dcp.save every {s.every_n_steps} steps), {s.planned_steps} steps; plan: "
                   + (", ".join(f"{i + 1}. rank {r}: {chaos.DESCRIPTIONS[p.mode]}"
                                for i, (p, r) in enumerate(zip(self.plan, self.targets))) or "none"))
        took = self.stack.warm_up(s.job_name)
        self.d.say(f"webhook ready: a dry-run pod of run {s.job_name} got the sidecar ({took:.1f} s)")
        self.stack.kubectl_apply(statefulset_manifest(s, self.stack.trainer_env()))
        t_submit = time.time()
        timed_out = False
        try:
            while not self._finished() and self.fatal is None:
                self._discover()
                for pod in self.pods:
                    self._read(pod)
                self._follow_store()
                self._gang_restart()
                self._maybe_preempt()
                if time.time() > t_submit + s.timeout:
                    timed_out = True
                    self.d.say(f"timed out after {s.timeout:.0f} s")
                    break
                self.d.refresh(self._status_line())
                interrupt.check()
                time.sleep(TICK)
        finally:
            if self.poller is not None:
                with contextlib.suppress(Exception):
                    self.poller.poll_once()
                    self._follow_store()
                self.poller.stop()
        return self._result(t_submit, timed_out)

    def _discover(self) -> None:
        from kresume.devtools.demo.run import _trainer_env

        known = {p.runner.uid for p in self.pods} | self._unmutated
        with self.node._lock:
            runners = [r for r in self.node.runners.values() if r.uid not in known
                       and (r.pod["metadata"].get("labels") or {}).get("app") == self.s.job_name]  # fmt: skip
        for r in runners:
            env = _trainer_env(r)
            if not any(c["name"] == contract.SIDECAR_CONTAINER_NAME for c in r.pod["spec"]["containers"]):
                self._unmutated.add(r.uid)
                self.notes.append(f"{r.name} was admitted without the kresume sidecar (the webhook failed open; "
                                  "see the operator log): deleted so the StatefulSet recreates it")
                self.d.say(f"pod {r.name} has NO kresume sidecar (the webhook failed open): its trainer refuses to "
                           "start; deleting it so the StatefulSet recreates it")
                self._delete(r.name, grace=0)
                continue
            step = env.get(contract.ENV_RESUME_STEP)
            rank = int(env.get(contract.ENV_RANK) or -1)
            pod = RankPod(r, rank, env.get(contract.ENV_EPOCH) or "", self.stack.trainer_log(r),
                          env.get(contract.ENV_RESUME_FROM) or None, int(step) if step else None)  # fmt: skip
            self.pods.append(pod)
            rnd = self.rounds.setdefault(pod.epoch, rankchecks.Round(pod.epoch))
            rnd.pods[rank] = r.name
            what = (f"step {pod.injected_step} ({pod.injected_url})" if pod.injected_url else "a fresh start")
            self.d.say(f"pod {r.name} created by the StatefulSet controller: rank {rank} of "
                       f"{env.get(contract.ENV_WORLD_SIZE)}, resume epoch {pod.epoch}, injected {what}")
            if self.poller is None and env.get(contract.ENV_RUN_URL):
                self.poller = StorePoller(env[contract.ENV_RUN_URL], self.stack.client_options).start()
                self.d.say(f"run URL {env[contract.ENV_RUN_URL]}")

    def _read(self, pod: RankPod) -> None:
        for ev in pod.log.read():
            kind = ev.get("event")
            if kind == "start" and pod.start is None:
                pod.start = ev
                rnd = self.rounds[pod.epoch]
                rnd.start_step[pod.rank] = ev.get("global_step")
                rnd.resumed_from[pod.rank] = ev.get("resumed_from")
                rnd.launched[pod.rank] = float(ev.get("launched") or ev["time"])
                self.d.say(f"rank {pod.rank} ({pod.runner.name}) started at step {ev.get('global_step')}"
                           + (f" from {ev['resumed_from']}" if ev.get("resumed_from") else ""))
                self._restarted(rnd)
            elif kind == "done":
                pod.done = True
            elif kind == "epoch-mismatch" and self.fatal is None:
                self.fatal = (f"rank {pod.rank} ({pod.runner.name}): the ranks were admitted into different resume "
                              f"epochs {ev.get('epochs')}: their parts could never meet (see the operator log)")
                self.d.say(f"FAILED: {self.fatal}")
            elif kind in ("peer-lost", "not-injected"):
                self.d.say(f"rank {pod.rank} ({pod.runner.name}): {kind} at step {ev.get('global_step')}: "
                           f"{ev.get('error') or ev.get('epochs')}")

    def _restarted(self, rnd: rankchecks.Round) -> None:
        p = next((p for p in self.preemptions if p.next_epoch in (None, rnd.epoch) and p.epoch != rnd.epoch), None)
        if p is None or len(rnd.start_step) < self.s.ranks or p.resumed_steps:
            return
        p.next_epoch, p.resumed_steps = rnd.epoch, dict(rnd.start_step)
        p.resumed_at = max(float(pod.start["time"]) for pod in self.pods if pod.epoch == rnd.epoch and pod.start)
        steps = ", ".join(f"rank {k} at step {v}" for k, v in sorted(rnd.start_step.items()))
        self.d.say(f"every rank resumed: {steps}"
                   f" (before the preemption: step {p.last_step_before}; lost {p.lost_steps}), "
                   f"{p.resumed_at - p.at:.1f} s after it")  # fmt: skip

    def _follow_store(self) -> None:
        if self.poller is None:
            return
        for sid, seen in list(self.poller.seen.items()):
            if sid in self._reported:
                continue
            with contextlib.suppress(Exception):  # retention may have pruned it: then it stays unread
                m = self.poller.store.read_manifest(sid)
                if m is not None:
                    self.wholes[sid] = rankchecks.Whole.of(m.source, [f.path for f in m.files])
            self._reported.add(sid)
            w = self.wholes.get(sid)
            self.d.say(f"committed step {seen.step}: parts of rank(s) {sorted(w.ranks) if w else '?'}")

    def _current(self) -> rankchecks.Round | None:
        """The newest round in which every rank started and no preemption happened yet."""
        hit = {p.epoch for p in self.preemptions}
        rounds = [r for r in self.rounds.values() if len(r.start_step) == self.s.ranks and r.epoch not in hit]
        return rounds[-1] if rounds else None

    def _live(self, epoch: str, rank: int) -> RankPod | None:
        return next((p for p in reversed(self.pods) if p.epoch == epoch and p.rank == rank
                     and not p.runner.done.is_set()), None)  # fmt: skip

    # --- chaos ----------------------------------------------------------------------------------------------
    def _maybe_preempt(self) -> None:
        i = len(self.preemptions)
        rnd = self._current()
        if i >= len(self.plan) or rnd is None or self.poller is None:
            return
        if len(self.poller.seen) < self.s.first_preemption_after:
            return
        planned, rank = self.plan[i], self.targets[i]
        pod = self._live(rnd.epoch, rank)
        if pod is None:
            return
        last, every = pod.log.last_step() or 0, self.s.every_n_steps
        if last - (rnd.start_step.get(rank) or 0) < planned.min_steps or last >= self.s.planned_steps - every:
            return
        recent = pod.log.events[-1] if pod.log.events else {}
        moment = ""
        if planned.mode == "kill":
            moment = f"SIGKILL of rank {rank} at step {last}"
        elif planned.mode == "step":
            if recent.get("event") == "progress" and last % every and (last + 1) % every:
                moment = f"SIGTERM of rank {rank} during step {last + 1}"
        elif planned.mode == "write":
            if recent.get("event") == "save" or (recent.get("event") == "progress" and last % every == 0):
                moment = f"SIGTERM of rank {rank} as its dcp.save of step {last} runs"
        elif planned.mode == "upload":
            folder = Path(pod.runner.volume_dirs.get(contract.VOLUME_NAME) or "/nonexistent")
            mine = ".metadata" if rank == 0 else f"__{rank}_0.distcp"  # the last file this rank writes
            whole = {d.name for d in folder.glob("step_*") if (d / mine).exists()}
            if rank not in self._armed:
                self._armed[rank] = whole
                return
            new = whole - self._armed[rank]
            if new:
                committed = {s.url.rstrip("/").rsplit("/", 1)[-1] for s in self.poller.seen.values()}
                state = "not yet committed" if not (new & committed) else "already committed"
                moment = f"SIGTERM of rank {rank} as {sorted(new)[0]} appears in its folder (upload in flight, {state})"
            self._armed[rank] |= whole
        if not moment:
            return
        p = RankPreemption(i + 1, planned.mode, rank, pod.runner.name, time.time(), last, moment, rnd.epoch)
        self.preemptions.append(p)
        self._armed.clear()
        self.node.preempt(self.s.namespace, pod.runner.name, kill=planned.mode == "kill")
        self.d.say(f"PREEMPTION {p.index}/{len(self.plan)} of {pod.runner.name}: {moment}")

    def _gang_restart(self) -> None:
        """Delete (gracefully) every other pod of a preempted round once its trainer ended (module docstring)."""
        for p in self.preemptions:
            for pod in self.pods:
                if pod.epoch != p.epoch or pod.rank == p.rank or pod.deleted_at or pod.runner.done.is_set():
                    continue
                trainer = next(c for c in pod.runner.regular if c.name == "trainer")
                late = time.time() > p.at + self.s.collective_timeout + SURVIVOR_WAIT
                if trainer.state != "terminated" and not late:
                    continue
                ended = (f"trainer exit {trainer.exit_code}" if trainer.state == "terminated"
                         else f"trainer still running {time.time() - p.at:.0f} s after the preemption")  # fmt: skip
                pod.log.read()
                p.survivors[pod.rank] = f"{ended} after step {pod.log.last_step()}"
                pod.deleted_at = time.time()
                self._delete(pod.runner.name)
                self.d.say(f"rank {pod.rank} ({pod.runner.name}): {ended}; deleting the pod so the StatefulSet "
                           "recreates it into the new resume epoch (gang restart)")
            if p.last_step_before is None and all(
                    pod.runner.done.is_set() for pod in self.pods if pod.epoch == p.epoch):
                steps = [pod.log.last_step() for pod in self.pods if pod.epoch == p.epoch]
                p.last_step_before = max((x for x in steps if x is not None), default=None)

    def _delete(self, name: str, grace: int | None = None) -> None:
        import kubernetes.client as k

        core = k.CoreV1Api(self.stack.api)
        grace = self.s.grace_seconds if grace is None else grace
        with contextlib.suppress(k.exceptions.ApiException):
            core.delete_namespaced_pod(name, self.s.namespace, body=k.V1DeleteOptions(grace_period_seconds=grace))

    def _finished(self) -> bool:
        rnd = self._current()
        if rnd is None or not self.pods:
            return False
        done = all(any(p.done for p in self.pods if p.epoch == rnd.epoch and p.rank == k) for k in range(self.s.ranks))
        if not done:
            return False
        self._all_done_at = self._all_done_at or time.time()
        final = self.poller.newest_step() if self.poller else None
        return final == self.s.planned_steps or time.time() > self._all_done_at + FINAL_COMMIT_WAIT

    # --- result ---------------------------------------------------------------------------------------------
    def _status_line(self) -> str:
        rnd = self._current()
        steps = {p.rank: p.log.last_step() for p in self.pods if rnd and p.epoch == rnd.epoch}
        n = len(self.poller.seen) if self.poller else 0
        newest = self.poller.newest_step() if self.poller else None
        return (f"steps {' '.join(f'r{k}={v}' for k, v in sorted(steps.items())) or '-'}/{self.s.planned_steps} | "
                f"committed {n} (newest whole step {newest if newest is not None else '-'}) | preemptions "
                f"{len(self.preemptions)}/{len(self.plan)}")  # fmt: skip

    def _ckptrun_table(self) -> str:
        if self.stack.plane is None:
            return ""
        res = self.stack.plane.kubectl("get", "ckptrun", "-n", self.s.namespace, check=False)
        return (res.stdout or res.stderr).rstrip()

    def _result(self, t_submit: float, timed_out: bool) -> dict[str, Any]:
        s, w = self.s, self.s.ranks
        seen = list(self.poller.seen.values()) if self.poller else []
        problems = rankchecks.whole_problems(seen, self.wholes, w) + ([self.fatal] if self.fatal else [])
        first = next(iter(self.rounds.values()), None)
        if first is not None:
            problems += rankchecks.round_problems(first, seen, self.wholes, w)
        for p in self.preemptions:
            rnd = self.rounds.get(p.next_epoch or "")
            if rnd is None:
                problems.append(f"preemption {p.index} of rank {p.rank}: the job did not restart with every rank")
                continue
            found = rankchecks.round_problems(rnd, seen, self.wholes, w)
            problems += [f"preemption {p.index} of rank {p.rank}: {x}" for x in found]
            rule = rankchecks.lost_steps_problem(p.mode, p.lost_steps, s.every_n_steps) if s.expect_zero_loss else None
            if rule:
                problems.append(f"preemption {p.index} of rank {p.rank}: {rule}")
        last = self._current()
        final = None
        if last is not None:
            done = [p.log.first("done") for p in self.pods if p.epoch == last.epoch]
            steps = {d.get("global_step") for d in done if d}
            final = steps.pop() if len(steps) == 1 else None
        if final != s.planned_steps:
            problems.append(f"the run did not finish its {s.planned_steps} steps on every rank (done: {final})")
        if len(self.preemptions) < len(self.plan):
            problems.append(f"only {len(self.preemptions)} of {len(self.plan)} planned preemptions happened")
        admissions = [{"pod": p.runner.name, "rank": p.rank, "epoch": p.epoch, "injected_url": p.injected_url,
                       "injected_step": p.injected_step, "start_step": (p.start or {}).get("global_step"),
                       "start_resumed_from": (p.start or {}).get("resumed_from"),
                       "loaded_step": (p.start or {}).get("global_step"), "problems": []} for p in self.pods]
        return {
            "ok": not problems and not timed_out, "problems": problems, "timed_out": timed_out, "ranks": w,
            "settings": {"preemptions": s.preemptions, "seed": s.seed, "store": self.stack.storage, "ranks": w,
                         "max_steps": s.planned_steps, "every_n_steps": s.every_n_steps, "step_seconds": s.step_seconds,
                         "grace_seconds": s.grace_seconds, "modes": list(s.modes), "hidden": s.hidden,
                         "master_port": s.master_port, "settle_seconds": s.settle_seconds},
            "final_step": final,
            "preemptions": [{**asdict(p), "resumed_step": p.resumed_step, "lost_steps": p.lost_steps,
                             "time_to_resume_s": None if p.resumed_at is None else p.resumed_at - p.at}
                            for p in self.preemptions],
            "rounds": [asdict(r) for r in self.rounds.values()],
            "admissions": admissions,
            "committed": [{**asdict(x), "ranks": sorted(self.wholes[x.id].ranks) if x.id in self.wholes else None}
                          for x in seen],
            "ckptrun": self._ckptrun_table(),
            "durations": {"job_s": round(time.time() - t_submit, 1)},
            "store_poll_errors": self.poller.errors if self.poller else 0,
            "timeline_median": {},
            "notes": self.notes,
        }  # fmt: skip
