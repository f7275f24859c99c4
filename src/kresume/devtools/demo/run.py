"""``kresume demo``: a real Lightning Job is preempted again and again and resumes by itself.

:func:`run_demo` starts the :class:`~kresume.devtools.demo.stack.Stack`, submits the Job, follows every pod of it
(trainer events from its log, the run's commits from the store), preempts it according to the
:mod:`~kresume.devtools.demo.chaos` plan, checks every restart (:mod:`~kresume.devtools.demo.checks`), and returns
the result as a JSON-able dict (``ok`` false when any check failed or the run did not finish).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kresume import contract
from kresume.devtools.demo import chaos, checks, interrupt, timeline
from kresume.devtools.demo.observe import StorePoller, TrainerLog, error_line
from kresume.devtools.demo.report import Display
from kresume.devtools.demo.settings import REPO, TRAIN_SCRIPT, DemoSettings
from kresume.devtools.demo.stack import Stack
from kresume.devtools.node import PodRunner

TICK = 0.05


@dataclass
class Preemption:
    """One injected preemption and its restart."""

    index: int
    mode: str
    pod: str
    at: float
    step: int | None
    moment: str
    old_pod_gone_at: float | None = None
    last_step_before: int | None = None
    new_pod: str | None = None
    new_pod_seen_at: float | None = None
    resumed_step: int | None = None
    resumed_at: float | None = None

    @property
    def lost_steps(self) -> int | None:
        if self.last_step_before is None or self.resumed_step is None:
            return None
        return self.last_step_before - self.resumed_step

    @property
    def time_to_resume(self) -> float | None:
        return None if self.resumed_at is None else self.resumed_at - self.at


@dataclass
class Tracked:
    """One pod of the Job as the demo follows it."""

    runner: PodRunner
    log: TrainerLog
    admission: checks.Admission
    env: dict[str, str]
    preempted: Preemption | None = None
    known_ckpts: set[str] = field(default_factory=set)
    log_read_after_done: float | None = None
    """Epoch seconds of the first read of its log once the pod was done (its last lines are in by then)."""


def _trainer_env(runner: PodRunner) -> dict[str, str]:
    c = next(c for c in runner.pod["spec"]["containers"] if c["name"] == "trainer")
    return {e["name"]: e.get("value") for e in c.get("env") or [] if "value" in e}


def run_demo(settings: DemoSettings, display: Display) -> dict[str, Any]:
    """Run the demo (see module docstring); Ctrl-C stops everything it started. Returns the result dict."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    work_dir = settings.work_dir or REPO / ".cache" / "demo" / stamp
    t_begin = time.time()
    stack_class = choose_stack(settings, display.say)
    with stack_class(settings, work_dir, display.say) as stack:
        display.say(f"stack ready in {time.time() - t_begin:.0f} s; logs under {work_dir}")
        if settings.ranks > 1:
            from kresume.devtools.demo.ranks import RanksDemo

            demo: _Demo | RanksDemo = RanksDemo(settings, stack, display)
        else:
            demo = _Demo(settings, stack, display)
        result = demo.run()
    result["durations"]["total_s"] = round(time.time() - t_begin, 1)
    result["work_dir"] = str(work_dir)
    result["logs"] = {k: str(v) for k, v in stack.logs.items()}
    result["node"] = stack.node_kind
    if getattr(stack, "helm_test", None):
        result["helm_test"] = stack.helm_test
    if getattr(stack, "restricted", None):
        result["restricted_namespace"] = stack.restricted
    if getattr(stack, "timings", None):
        result["durations"].update({f"stack_{k}": round(v, 1) for k, v in stack.timings.items()})
    return result


def choose_stack(settings: DemoSettings, say: Any) -> type[Stack]:
    """The stack for ``settings.node``: ``kubelet`` -> RealStack, ``agent`` -> Stack, ``auto`` -> RealStack when
    :func:`kresume.devtools.localcluster.available` says yes and the store is not ``file://`` (the real node's
    containers cannot reach this machine's folders), else Stack (and why). Raises ValueError."""
    if settings.node not in ("auto", "kubelet", "agent"):
        raise ValueError(f"--node {settings.node!r}: choose auto, kubelet or agent")
    if settings.node == "agent":
        return Stack
    if settings.ranks > 1:  # the real kubelet mode builds one image per demo and runs one node: not wired for ranks
        if settings.node == "kubelet":
            raise ValueError("--ranks > 1 runs on the node agent only: use --node agent (or auto)")
        say("using the node agent (containers as local processes): --ranks > 1 runs there")
        return Stack
    if (settings.store or "").startswith("file:"):  # measured: the sidecar's commits failed with EROFS, unseen
        why_not = ("--store file:// needs the node agent: a real node's containers cannot write this machine's "
                   "folders (read-only root file system, the path not mounted); use the default store (a local "
                   "SeaweedFS) for the real node")
        if settings.node == "kubelet":
            raise ValueError(why_not)
        say(f"using the node agent (containers as local processes): {why_not}")
        return Stack
    from kresume.devtools import localcluster

    why = localcluster.available()
    if why is None:
        from kresume.devtools.demo.realstack import RealStack

        return RealStack
    if settings.node == "kubelet":
        raise RuntimeError(f"--node kubelet: {why}")
    say(f"using the node agent (containers as local processes): {why}")
    return Stack


class _Demo:
    def __init__(self, settings: DemoSettings, stack: Stack, display: Display) -> None:
        self.s, self.stack, self.d = settings, stack, display
        assert stack.node is not None
        self.node = stack.node
        self.plan = chaos.plan(settings.preemptions, settings.seed, settings.every_n_steps, settings.modes)
        self.pods: list[Tracked] = []
        self.preemptions: list[Preemption] = []
        self.poller: StorePoller | None = None
        self.done_event: dict[str, Any] | None = None

    def _describe(self, mode: str) -> str:
        return self.stack.descriptions.get(mode) or chaos.DESCRIPTIONS[mode]

    # --- main loop ------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        s = self.s
        self.d.say(f"submitting Job {s.namespace}/{s.job_name}: examples/lightning/train.py, {s.planned_steps} steps, "
                   f"a checkpoint every {s.every_n_steps}; plan: "
                   + (", ".join(f"{i + 1}. {self._describe(p.mode)}" for i, p in enumerate(self.plan)) or "none"))
        took = self.stack.warm_up(s.job_name)
        self.d.say(f"webhook ready: a dry-run pod of run {s.job_name} got the sidecar ({took:.1f} s)")
        self.stack.kubectl_apply(self.stack.job_manifest(TRAIN_SCRIPT))
        t_submit = time.time()
        deadline = t_submit + s.timeout
        timed_out = False
        try:
            while True:
                self._discover()
                self._follow()
                if self.done_event is not None and self.pods and self.pods[-1].runner.done.is_set():
                    break
                failure = self._container_failure()
                if failure:
                    self.d.say(f"FAILED: {failure}")
                    break
                if time.time() > deadline:
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
                self.poller.stop()
        return self._result(t_submit, timed_out)

    def _discover(self) -> None:
        known = {t.runner.uid for t in self.pods}
        with self.node._lock:
            runners = [r for r in self.node.runners.values()
                       if r.uid not in known and (r.pod["metadata"].get("labels") or {}).get("job-name") == self.s.job_name]
        for r in runners:
            env = _trainer_env(r)
            prev = self.pods[-1] if self.pods else None
            lo = prev.runner.failed_at if prev and prev.runner.failed_at else (prev.preempted.at if prev and prev.preempted else 0.0)
            step = env.get(contract.ENV_RESUME_STEP)
            adm = checks.Admission(pod=r.name, lo=lo, hi=self.node.first_seen.get(r.uid, time.time()),
                                   injected_url=env.get(contract.ENV_RESUME_FROM) or None,
                                   injected_step=int(step) if step else None, start_step=None, start_resumed_from=None)
            if adm.injected_url:  # load it now: retention may delete it once the run has moved on
                adm.loaded_step, adm.load_error = self._load_step(adm.injected_url)
            t = Tracked(r, self.stack.trainer_log(r), adm, env)
            self.pods.append(t)
            sidecar = any(c["name"] == contract.SIDECAR_CONTAINER_NAME for c in r.pod["spec"]["containers"])
            what = (f"resume from step {adm.injected_step} ({adm.injected_url})" if adm.injected_url
                    else "no checkpoint to resume from (fresh start)")  # fmt: skip
            self.d.say(f"pod {r.name} created by the Job controller; webhook injected "
                       f"{'the sidecar and ' if sidecar else '(NO sidecar!) '}{what}")
            if prev and prev.preempted:
                prev.preempted.new_pod, prev.preempted.new_pod_seen_at = r.name, adm.hi
            if self.poller is None and env.get(contract.ENV_RUN_URL):
                self.poller = StorePoller(env[contract.ENV_RUN_URL], self.stack.client_options).start()
                self.d.say(f"run URL {env[contract.ENV_RUN_URL]}")

    def _follow(self) -> None:
        if not self.pods:
            return
        self._finish_old_logs()
        cur = self.pods[-1]
        for ev in cur.log.read():
            kind = ev.get("event")
            if kind == "start":
                cur.admission.start_step = ev.get("global_step")
                cur.admission.start_resumed_from = ev.get("resumed_from")
                self.d.say(f"trainer in {cur.runner.name} started at step {ev.get('global_step')}"
                           + (f" (resumed from {ev['resumed_from']})" if ev.get("resumed_from") else ""))
                prev = self.pods[-2] if len(self.pods) > 1 else None
                if prev and prev.preempted:
                    p = prev.preempted
                    p.resumed_step, p.resumed_at = ev.get("global_step"), ev.get("time")
                    p.last_step_before = prev.log.last_step()
                    self.d.say(f"resumed at step {p.resumed_step}: lost {p.lost_steps} steps, "
                               f"{p.time_to_resume:.1f} s after the preemption")
            elif kind == "done":
                self.done_event = ev
                self.d.say(f"training finished at step {ev.get('global_step')}")
            elif kind == "progress" and ev.get("global_step", 0) % self.s.every_n_steps == 0:
                self.d.say(f"step {ev['global_step']}: ModelCheckpoint saves")
        self._report_commits()
        if cur.preempted is None and not cur.runner.done.is_set():
            self._maybe_preempt(cur)
        if cur.preempted and cur.preempted.old_pod_gone_at is None and cur.runner.done.is_set():
            cur.preempted.old_pod_gone_at = time.time()

    def _finish_old_logs(self) -> None:
        """Read on the logs of preempted pods until a second after they are done: the replacement pod exists
        before the old trainer has written its last lines (its final save's ``preempted``, its ``exit``), which
        the time line needs, and a real node deletes the log with the pod."""
        now = time.time()
        for old in self.pods[:-1]:
            if old.preempted is None or (old.log_read_after_done and now - old.log_read_after_done > 1.0):
                continue
            done = old.runner.done.is_set()
            old.log.read()
            if done and old.log_read_after_done is None:
                old.log_read_after_done = now

    def _report_commits(self) -> None:
        if self.poller is None:
            return
        reported = getattr(self, "_reported", set())
        for sid, seen in list(self.poller.seen.items()):
            if sid not in reported:
                reported.add(sid)
                self.d.say(f"committed step {seen.step} (by {seen.source_pod or '?'})")
        self._reported = reported

    def _container_failure(self) -> str | None:
        """The current pod's first container that ended on its own (not preempted, not stopped by the agent),
        as one line with its error (:func:`checks.container_failure`); recorded on its admission. None if none.
        The demo stops at it: its trainer never fails by design, so waiting for the timeout would only hide it."""
        cur = self.pods[-1] if self.pods else None
        if cur is None or self.done_event is not None or cur.preempted is not None:
            return None
        failed = cur.runner.failed_containers()
        if not failed:
            return None
        c = failed[0]
        cur.log.read()
        cur.admission.failure = checks.container_failure(
            cur.runner.name, c.name, c.reason, c.exit_code, c.message, error_line(Path(c.log_path)),
            trainer_started=cur.admission.start_step is not None, step=cur.log.last_step())  # fmt: skip
        return cur.admission.failure

    # --- chaos ----------------------------------------------------------------------------------------------
    def _maybe_preempt(self, cur: Tracked) -> None:
        i = len(self.preemptions)
        if i >= len(self.plan) or cur.admission.start_step is None or self.poller is None:
            return
        if len(self.poller.seen) < self.s.first_preemption_after:
            return
        planned = self.plan[i]
        last = cur.log.last_step() or 0
        if last - cur.admission.start_step < planned.min_steps or last >= self.s.planned_steps - 2:
            return
        ckpt_dir = cur.runner.volume_dirs.get(contract.VOLUME_NAME)
        local = {p.name for p in Path(ckpt_dir).glob("*.ckpt")} if ckpt_dir else set()
        moment = ""
        if planned.mode == "kill":
            moment = f"SIGKILL at step {last}"
        elif planned.mode == "step":
            every = self.s.every_n_steps
            recent = [e for e in cur.log.events[-2:] if e.get("event") == "progress"]
            if recent and recent[-1]["global_step"] == last and last % every not in (0, every - 1):
                moment = f"SIGTERM during step {last + 1}"
        elif planned.mode == "write":
            recent = [e for e in cur.log.events[-3:] if e.get("event") == "progress"]
            if recent and recent[-1]["global_step"] % self.s.every_n_steps == 0 and recent[-1]["global_step"] == last:
                moment = f"SIGTERM as ModelCheckpoint saves step {last}"
        elif planned.mode == "upload":
            if not cur.known_ckpts and not getattr(cur, "_armed", False):
                cur.known_ckpts = set(local)
                cur._armed = True  # type: ignore[attr-defined]
                return
            new = local - cur.known_ckpts
            if new:
                committed = {s.url.rsplit("/", 1)[-1] for s in self.poller.seen.values()}
                state = "not yet committed" if not (new & committed) else "already committed"
                moment = f"SIGTERM as {sorted(new)[0]} appears (upload in flight, {state})"
            cur.known_ckpts |= local
        if not moment:
            return
        p = Preemption(i + 1, planned.mode, cur.runner.name, time.time(), last, moment)
        cur.preempted = p
        self.preemptions.append(p)
        self.node.preempt(self.s.namespace, cur.runner.name, kill=planned.mode == "kill")
        self.d.say(f"PREEMPTION {p.index}/{len(self.plan)} of {cur.runner.name}: {moment}")

    # --- result ---------------------------------------------------------------------------------------------
    def _status_line(self) -> str:
        cur = self.pods[-1] if self.pods else None
        step = cur.log.last_step() if cur else None
        n = len(self.poller.seen) if self.poller else 0
        newest = self.poller.newest_step() if self.poller else None
        return (f"step {step if step is not None else '-'}/{self.s.planned_steps} | pod "
                f"{cur.runner.name if cur else '-'} | committed {n} (newest step {newest if newest is not None else '-'})"
                f" | preemptions {len(self.preemptions)}/{len(self.plan)}")

    def _load_step(self, url: str) -> tuple[int | None, str | None]:
        import fsspec
        import torch

        try:
            with fsspec.open(url, "rb", **self.stack.client_options) as f:
                ckpt = torch.load(f, map_location="cpu", weights_only=False)
            return int(ckpt["global_step"]), None
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            return None, f"{type(exc).__name__}: {exc}"

    def _ckptrun_table(self, wait_s: float = 20.0) -> str:
        """``kubectl get ckptrun`` as printed. The operator creates the CheckpointRun after the first admission,
        asynchronously: a demo that stopped a second after the Job (a trainer that cannot start) waits up to
        ``wait_s`` seconds for its row instead of printing "No resources found" (seen in CI)."""
        if self.stack.plane is None:
            return ""
        deadline = time.monotonic() + wait_s
        while True:
            res = self.stack.plane.kubectl("get", "ckptrun", "-n", self.s.namespace, check=False)
            table = (res.stdout or res.stderr).rstrip()
            if (res.returncode == 0 and len(table.splitlines()) > 1) or time.monotonic() > deadline:
                return table
            time.sleep(0.5)

    def _timeline(self, seen: list[Any]) -> dict[int, dict[str, Any] | None]:
        """The time line of each restart (:func:`timeline.collect`), by preemption index."""
        out: dict[int, dict[str, Any] | None] = {}
        operator_log = self.stack.operator_log() if self.preemptions else None
        for i, old in enumerate(self.pods[:-1]):
            p, new = old.preempted, self.pods[i + 1]
            if p is None:
                continue
            m = next((x for x in seen if x.url == new.admission.injected_url), None)
            size = m.total_bytes if m is not None else None
            try:
                out[p.index] = timeline.collect(
                    old, new, sigterm=p.at, operator_log=operator_log, namespace=self.s.namespace,
                    run=self.s.job_name, admission_window=(new.admission.lo, new.admission.hi), checkpoint_bytes=size)
            except Exception as exc:  # noqa: BLE001 - the time line is a report; it must not fail the demo
                out[p.index] = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    def _result(self, t_submit: float, timed_out: bool) -> dict[str, Any]:
        seen = list(self.poller.seen.values()) if self.poller else []
        restarts = []
        problems: list[str] = []
        for t in self.pods:
            a = t.admission
            found = checks.check(a, seen)
            if not any(c["name"] == contract.SIDECAR_CONTAINER_NAME for c in t.runner.pod["spec"]["containers"]):
                found.insert(0, f"{a.pod}: admitted without the kresume sidecar (see the operator log)")
            problems += found
            restarts.append({**asdict(a), "problems": found})
        if self.s.expect_zero_loss:
            for p in self.preemptions:
                rule = chaos.lost_steps_problem(p.mode, p.lost_steps, self.s.every_n_steps)
                if rule:
                    problems.append(f"preemption {p.index} of {p.pod}: {rule}")
        final = self.done_event.get("global_step") if self.done_event else None
        failed = next((t for t in self.pods if t.admission.failure), None)
        if failed is not None:
            problems.append(f"the demo stopped at that failure, {time.time() - t_submit:.0f} s after submitting the "
                            f"Job; the container's log: {failed.runner.logs_dir}")  # fmt: skip
        else:
            if final != self.s.planned_steps:
                problems.append(f"the run did not finish its {self.s.planned_steps} steps (last done event: {final})")
            if len(self.preemptions) < len(self.plan):
                problems.append(f"only {len(self.preemptions)} of {len(self.plan)} planned preemptions happened")
        restarts_split = self._timeline(seen)
        ckptrun = self._ckptrun_table()
        return {
            "ok": not problems and not timed_out,
            "problems": problems,
            "timed_out": timed_out,
            "settings": {"preemptions": self.s.preemptions, "seed": self.s.seed, "store": self.stack.storage,
                         "max_steps": self.s.planned_steps, "every_n_steps": self.s.every_n_steps,
                         "step_seconds": self.s.step_seconds, "grace_seconds": self.s.grace_seconds,
                         "sidecar_grace_seconds": self.s.sidecar_grace_seconds, "modes": list(self.s.modes),
                         "hidden": self.s.hidden},
            "final_step": final,
            "preemptions": [{**asdict(p), "lost_steps": p.lost_steps, "time_to_resume_s": p.time_to_resume,
                             "timeline": restarts_split.get(p.index)} for p in self.preemptions],
            "timeline_median": timeline.with_cp_ratio(
                timeline.summarize([r for r in restarts_split.values() if r]),
                [r for r in restarts_split.values() if r], self.stack.work_dir),
            "admissions": restarts,
            "committed": [asdict(x) for x in seen],
            "ckptrun": ckptrun,
            "durations": {"job_s": round(time.time() - t_submit, 1)},
            "store_poll_errors": self.poller.errors if self.poller else 0,
        }  # fmt: skip
