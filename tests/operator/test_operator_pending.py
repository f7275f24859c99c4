"""The operator's view of multi-rank steps waiting for ranks (``refresher.pending_steps`` over
``RunStore.pending()``; ``status.pending`` and ``kresume_steps_waiting_for_ranks``): real part records in a
real store (moto S3), one rank's part recorded, then the other's."""

from __future__ import annotations

import asyncio
import uuid

from _fixtures.objstores import make_store_base
from kresume.operator import admission, decisions, refresher
from kresume.operator.notes import Notes
from kresume.operator.resolution import Resolver
from kresume.operator.settings import OperatorConfig
from kresume.store import layout
from kresume.store.parts import Expects
from kresume.store.runstore import RunStore


def state_for(options: dict) -> admission.State:
    config = OperatorConfig()
    return admission.State(config=config, resolver=Resolver(config.resolution,
                                                            open_store=lambda u, o: RunStore.open(u, options)),
                           api=None, notes=Notes())  # type: ignore[arg-type]


def _rank_folder(root, rank: int, step: int):
    folder = root / f"rank{rank}" / f"step_{step}"
    folder.mkdir(parents=True)
    (folder / f"rank_{rank}.pt").write_bytes(bytes([rank]) * 64)
    return folder


def test_pending_steps_from_real_parts(objstore_pool, tmp_path):
    base = make_store_base("s3-moto", objstore_pool, tmp_path)
    url = base.join("ns", f"pend-{uuid.uuid4().hex[:8]}") + "/"
    ranks = [RunStore.open(url, base.options) for _ in range(2)]
    state = state_for(base.options)
    try:
        assert asyncio.run(refresher.pending_steps(state, url, {})) == []  # a fresh run waits for nothing
        epoch = layout.new_epoch_token()
        for step in (10, 20):
            out = ranks[0].commit_part(_rank_folder(tmp_path, 0, step), rank=0, world_size=2, epoch=epoch,
                                       expect=Expects(ranks=2))
            assert not out.committed
        assert asyncio.run(refresher.pending_steps(state, url, {})) == [20, 10]  # rank 1 is stuck: visible
        assert ranks[1].commit_part(_rank_folder(tmp_path, 1, 20), rank=1, world_size=2, epoch=epoch,
                                    expect=Expects(ranks=2)).committed
        pending = asyncio.run(refresher.pending_steps(state, url, {}))
        assert pending == [10]
        # step 10 can no longer be resumed (20 is whole): it does not count as waiting
        assert decisions.waiting_for_ranks(pending, latest_step=20) == []
        assert decisions.pending_summary(decisions.waiting_for_ranks(pending, None)) == {"step": 10, "count": 1}
    finally:
        state.resolver.close()


def test_a_store_that_fails_leaves_status_pending_alone(tmp_path):
    class Broken:
        def pending(self):
            raise OSError("store down")

    config = OperatorConfig()
    state = admission.State(config=config, resolver=Resolver(config.resolution, open_store=lambda u, o: Broken()),
                            api=None, notes=Notes())  # type: ignore[arg-type]
    try:
        steps = asyncio.run(refresher.pending_steps(state, "memory://kresume-pending/ns/r/", {}))
        assert steps is None and decisions.pending_summary(decisions.waiting_for_ranks(steps, 5)) is False
    finally:
        state.resolver.close()
