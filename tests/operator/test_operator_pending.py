"""The hook for the store's pending multi-rank steps (``refresher.pending_steps``): what it accepts from
``RunStore.pending()``, and that a store without it reports nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from kresume.operator import admission, refresher
from kresume.operator.notes import Notes
from kresume.operator.resolution import Resolver
from kresume.operator.settings import OperatorConfig
from kresume.store.runstore import RunStore


def state_with(store: Any) -> admission.State:
    config = OperatorConfig()
    return admission.State(config=config, resolver=Resolver(config.resolution, open_store=lambda u, o: store),
                           api=None, notes=Notes())  # type: ignore[arg-type]


def test_pending_steps_newest_first_from_any_shape():
    class WithParts:
        def pending(self) -> list[Any]:
            return [20, SimpleNamespace(step=40), {"step": 30}, {"name": "no step"}, -1]

    state = state_with(WithParts())
    try:
        assert asyncio.run(refresher.pending_steps(state, "memory://x/ns/r/", {})) == [40, 30, 20]
    finally:
        state.resolver.close()


def test_a_store_without_pending_reports_nothing():
    state = state_with(RunStore.open("memory://kresume-pending/ns/r/"))
    try:
        if hasattr(RunStore, "pending"):  # the store's multi-rank commit has landed: a fresh run waits for nothing
            assert asyncio.run(refresher.pending_steps(state, "memory://kresume-pending/ns/r/", {})) == []
        else:
            assert asyncio.run(refresher.pending_steps(state, "memory://kresume-pending/ns/r/", {})) is None
    finally:
        state.resolver.close()
