"""Quiet runs (``kresume.operator.activity``) and the resolver's answers from memory.

A stale answer here is a pod resuming from an older checkpoint than the newest committed one, so the
rules are tested one by one with a hand-driven clock; the resolver tests count real store lookups on
``memory://``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from kresume.operator.activity import Activity, may_commit
from kresume.operator.resolution import SOURCE_MEMORY, SOURCE_STORE, Resolver
from kresume.operator.settings import ResolutionSettings
from kresume.store.runstore import RunStore

URL = "memory://kresume-activity/ns/train/"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pod(phase: str = "Running", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


@pytest.mark.parametrize(("phase", "deleting", "expected"), [
    ("Pending", False, True), ("Running", False, True), ("Running", True, True), ("Unknown", False, True),
    ("Succeeded", False, False), ("Failed", False, False), ("Failed", True, False),
])
def test_a_pod_may_commit_until_it_has_finished(phase, deleting, expected):
    assert may_commit(pod(phase, deleting)) is expected


def test_a_run_never_seen_in_the_watch_is_never_quiet():
    clock = Clock()
    act = Activity(admission_grace=10, clock=clock)
    assert act.quiet_since(URL) is None
    act.admitted(URL)
    clock.now += 1000  # the admission expired, but the watch never showed the run (e.g. an unwatched namespace)
    assert act.quiet_since(URL) is None


def test_a_run_is_quiet_from_the_moment_its_last_pod_finishes():
    clock = Clock()
    act = Activity(clock=clock)
    act.admitted(URL)
    assert act.observed(URL, "a", pod("Pending")) is False
    assert act.quiet_since(URL) is None
    clock.now = 150.0
    assert act.observed(URL, "a", pod("Running", deleting=True)) is False  # still flushing in its grace period
    assert act.quiet_since(URL) is None
    clock.now = 160.0
    assert act.observed(URL, "a", pod("Failed", deleting=True)) is True
    assert act.quiet_since(URL) == 160.0
    clock.now = 170.0
    assert act.observed(URL, "a", {}, deleted=True) is False  # already quiet: no second refresh
    assert act.quiet_since(URL) == 160.0


def test_one_live_pod_keeps_the_run_busy():
    clock = Clock()
    act = Activity(clock=clock)
    act.observed(URL, "a", pod("Running"))
    act.observed(URL, "b", pod("Running"))
    act.observed(URL, "a", {}, deleted=True)
    assert act.quiet_since(URL) is None
    act.observed(URL, "b", pod("Succeeded"))
    assert act.quiet_since(URL) == clock.now


def test_an_admission_makes_a_quiet_run_busy_until_its_pod_ends():
    clock = Clock()
    act = Activity(admission_grace=60, clock=clock)
    act.observed(URL, "a", {}, deleted=True)
    assert act.quiet_since(URL) == 100.0
    act.admitted(URL)  # the replacement is being created: its pod will start a sidecar
    assert act.quiet_since(URL) is None
    clock.now = 101.0
    act.observed(URL, "b", pod("Pending"))
    clock.now = 500.0  # long past the grace: the pod itself keeps the run busy
    assert act.quiet_since(URL) is None
    act.observed(URL, "b", {}, deleted=True)
    assert act.quiet_since(URL) == 500.0


def test_an_admitted_pod_not_yet_in_the_watch_keeps_the_run_busy_for_the_grace():
    clock = Clock()
    act = Activity(admission_grace=60, clock=clock)
    act.observed(URL, "a", {}, deleted=True)
    act.admitted(URL)
    act.admitted(URL)
    clock.now = 110.0
    act.observed(URL, "b", pod("Pending"))
    act.observed(URL, "b", pod("Pending"))  # a second event of the same pod is not the other admission
    act.observed(URL, "b", pod("Failed"))
    assert act.quiet_since(URL) is None  # one admitted pod has not shown up yet
    clock.now = 160.0  # the grace of both admissions (made at 100) is over: that pod was refused
    assert act.quiet_since(URL) == 160.0


def test_forget_drops_the_run():
    act = Activity(clock=Clock())
    act.observed(URL, "a", pod("Failed"))
    assert act.quiet_since(URL) is not None
    act.forget(URL)
    assert act.quiet_since(URL) is None


# --- the resolver --------------------------------------------------------------------------------

class Counting:
    """``open_store`` that counts ``latest()`` calls on a real RunStore."""

    def __init__(self) -> None:
        self.lookups = 0
        self.bad_mark_reads = 0

    def __call__(self, url: str, options: Any) -> Any:
        store = RunStore.open(url, options)
        outer = self

        class Store:
            def latest(self, deadline: float | None = None) -> Any:
                outer.lookups += 1
                return store.latest(deadline=deadline)

            def manifest_ids(self) -> list[str]:
                return store.manifest_ids()

            def is_bad(self, checkpoint_id: str) -> bool:  # the read before every answer from memory
                outer.bad_mark_reads += 1
                return store.is_bad(checkpoint_id)

        return Store()


@pytest.fixture
def run_url() -> str:
    return f"memory://kresume-activity-{uuid.uuid4().hex[:8]}/ns/train/"


@pytest.fixture
def ckpts(tmp_path: Path) -> list[Path]:
    import torch

    out = []
    for step in (10, 20):
        path = tmp_path / f"epoch=0-step={step}.ckpt"
        torch.save({"w": torch.zeros(4), "global_step": step}, path)
        out.append(path)
    return out


def resolver(clock: Clock, *, max_age: float = 30.0, activity: bool = True) -> tuple[Resolver, Counting, Activity | None]:
    counting = Counting()
    act = Activity(clock=clock) if activity else None
    return Resolver(ResolutionSettings(quiet_max_age=max_age), open_store=counting, clock=clock, activity=act), counting, act


def resolve(res: Resolver, url: str) -> Any:
    return asyncio.run(res.resolve(url, {}, budget=5))


def test_quiet_run_is_answered_from_memory_with_the_newest_checkpoint(run_url, ckpts):
    clock = Clock()
    res, counting, act = resolver(clock)
    store = RunStore.open(run_url, {})
    store.commit(ckpts[0])
    act.observed(run_url, "a", pod("Running"))
    assert resolve(res, run_url).source == SOURCE_STORE  # busy: asks the store
    newest = store.commit(ckpts[1])  # the sidecar's last commit, in the grace period
    clock.now += 1
    act.observed(run_url, "a", {}, deleted=True)  # the pod is gone: quiet
    first = resolve(res, run_url)
    assert first.source == SOURCE_STORE, "the cached answer predates the quiet moment: it must not be used"
    assert first.resume.checkpoint == newest.id
    clock.now += 5
    again = resolve(res, run_url)
    assert again.source == SOURCE_MEMORY and again.error is None
    assert again.resume.checkpoint == newest.id
    assert counting.lookups == 2 and counting.bad_mark_reads == 1


def test_memory_answers_stop_when_a_pod_is_admitted(run_url, ckpts):
    clock = Clock()
    res, counting, act = resolver(clock)
    act.observed(run_url, "a", {}, deleted=True)
    assert resolve(res, run_url).resume is None
    assert resolve(res, run_url).source == SOURCE_MEMORY
    act.admitted(run_url)
    assert resolve(res, run_url).source == SOURCE_STORE


def test_memory_answers_expire_after_quiet_max_age(run_url, ckpts):
    clock = Clock()
    res, counting, act = resolver(clock, max_age=30)
    act.observed(run_url, "a", {}, deleted=True)
    resolve(res, run_url)
    newest = RunStore.open(run_url, {}).commit(ckpts[0])  # by hand, while the run has no pod
    clock.now += 29
    assert resolve(res, run_url).resume is None  # within the documented bound, the hand commit is unseen
    clock.now += 2
    late = resolve(res, run_url)
    assert late.source == SOURCE_STORE and late.resume.checkpoint == newest.id


@pytest.mark.parametrize(("max_age", "activity"), [(0.0, True), (30.0, False)])
def test_memory_answers_can_be_turned_off(run_url, max_age, activity):
    clock = Clock()
    res, counting, act = resolver(clock, max_age=max_age, activity=activity)
    if act is not None:
        act.observed(run_url, "a", {}, deleted=True)
    for _ in range(3):
        assert resolve(res, run_url).source == SOURCE_STORE
    assert counting.lookups == 3
