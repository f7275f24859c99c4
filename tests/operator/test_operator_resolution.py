"""``Resolver``: answers from memory check the bad mark of the checkpoint they name; fallbacks skip known-bad ids.

A real ``RunStore`` on ``file://`` (commits of small ``torch.save`` files, ``mark_bad``) and a real
:class:`~kresume.operator.activity.Activity` made quiet the way the pod watch makes it; a store that fails is a
plain object whose reads raise (an unreachable store).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kresume.injection import Resume
from kresume.operator.activity import Activity
from kresume.operator.resolution import SOURCE_MEMORY, SOURCE_NONE, SOURCE_STATUS, SOURCE_STORE, Resolver
from kresume.operator.settings import ResolutionSettings
from kresume.store.runstore import RunStore


@pytest.fixture
def run(tmp_path: Path) -> tuple[str, RunStore]:
    url = f"file://{tmp_path}/store/ns/train/"
    return url, RunStore.open(url)


def commit(store: RunStore, tmp_path: Path, step: int) -> str:
    import torch

    path = tmp_path / f"epoch=0-step={step}.ckpt"
    torch.save({"w": torch.zeros(2), "global_step": step}, path)
    return store.commit(path).id


class Unreachable:
    """A store whose every read fails, as an unreachable endpoint does."""

    def latest(self, *, deadline: float | None = None) -> Any:
        raise ConnectionError("store unreachable")

    def is_bad(self, checkpoint_id: str) -> bool:
        raise ConnectionError("store unreachable")

    def manifest_ids(self) -> list[str]:
        raise ConnectionError("store unreachable")


def quiet_resolver(url: str, **kw: Any) -> Resolver:
    activity = Activity()
    activity.observed(url, "old-pod", {}, deleted=True)  # its last pod is gone: the run is quiet
    return Resolver(ResolutionSettings(), activity=activity, **kw)


def test_memory_answer_of_a_checkpoint_marked_bad_since_goes_to_the_store(run, tmp_path):
    url, store = run
    older = commit(store, tmp_path, 10)
    newest = commit(store, tmp_path, 20)
    resolver = quiet_resolver(url)

    async def scenario() -> list[tuple[str | None, str]]:
        await resolver.refresh(url, {})  # read after the run became quiet: exact
        first = await resolver.resolve(url, {})
        store.mark_bad(newest, "does not load")
        second = await resolver.resolve(url, {})
        third = await resolver.resolve(url, {})
        return [(o.resume.checkpoint if o.resume else None, o.source) for o in (first, second, third)]

    try:
        assert asyncio.run(scenario()) == [(newest, SOURCE_MEMORY), (older, SOURCE_STORE), (older, SOURCE_MEMORY)]
        assert resolver.known_bad(url, newest)
    finally:
        resolver.close()


def test_fallbacks_never_inject_a_checkpoint_known_to_be_bad(run, tmp_path):
    url, _ = run
    resolver = Resolver(ResolutionSettings(), open_store=lambda u, o: Unreachable())
    status = Resume(url=url + "checkpoints/c1/x.ckpt", checkpoint="c1", name="x.ckpt", step=5)

    async def scenario() -> list[tuple[str | None, str]]:
        before = await resolver.resolve(url, {}, budget=0.5, fallback=status)
        resolver.note_bad(url, "c1")  # e.g. the operator's own crash-loop mark
        after = await resolver.resolve(url, {}, budget=0.5, fallback=status)
        return [(o.resume.checkpoint if o.resume else None, o.source) for o in (before, after)]

    try:
        assert asyncio.run(scenario()) == [("c1", SOURCE_STATUS), (None, SOURCE_NONE)]
    finally:
        resolver.close()


def test_note_bad_drops_the_cached_answer_and_a_store_answer_clears_it_again(run, tmp_path):
    url, store = run
    only = commit(store, tmp_path, 10)
    resolver = quiet_resolver(url)

    async def scenario() -> tuple[Any, Any, bool]:
        await resolver.refresh(url, {})
        resolver.note_bad(url, only)
        gone = resolver.cached(url)
        again = await resolver.resolve(url, {})  # the store never marked it: its answer says it is good
        return gone, again, resolver.known_bad(url, only)

    try:
        gone, again, still_bad = asyncio.run(scenario())
        assert gone is None and again.source == SOURCE_STORE and again.resume.checkpoint == only
        assert still_bad is False
    finally:
        resolver.close()


def test_bad_mark_check_that_cannot_be_read_asks_the_store(run, tmp_path):
    url, store = run
    committed = commit(store, tmp_path, 10)
    calls: list[str] = []

    class FlakyBadMarks:
        """The real store, except that reading one bad mark fails (a transient error)."""

        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(store, name)

        def is_bad(self, checkpoint_id: str) -> bool:
            calls.append("is_bad")
            raise TimeoutError("bad-mark read timed out")

    resolver = quiet_resolver(url, open_store=lambda u, o: FlakyBadMarks())

    async def scenario() -> Any:
        await resolver.refresh(url, {})
        calls.clear()
        return await resolver.resolve(url, {})

    try:
        out = asyncio.run(scenario())
        assert out.source == SOURCE_STORE and out.resume.checkpoint == committed
        assert calls[0] == "is_bad" and "latest" in calls
    finally:
        resolver.close()
