"""Two writers racing on one run, on every backend the suite runs (issue 11 item 4; docs/store-protocol.md
"Pointer moves"): the pointer never moves backwards, the newer commit always ends up named, every
manifest that exists is whole, and two creations of one manifest id leave exactly one.

Each race: two threads released by a barrier each commit a tiny checkpoint (``RunStore.commit``: one
data object, a create-only manifest, a conditional pointer move) with a seeded random step, while an
observer thread reads the pointer continuously; then both race to create one shared manifest id with
different bytes. ``KRESUME_RACES`` sets the races per backend: CI runs a seeded
:data:`CI_RACES`; the full campaign is ``KRESUME_RACES=200 .venv/bin/python -m pytest -s
tests/store/test_store_races.py`` (counts printed per backend).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import uuid
from pathlib import Path

from kresume.store import errors, layout
from kresume.store import commit as store_commit
from kresume.store.manifest import FileEntry, Manifest
from kresume.store.runstore import RunStore

CI_RACES = 30
"""Races per backend in the normal suite (seeded); the issue's acceptance count is 200 (module docstring)."""


def _races() -> int:
    return int(os.environ.get("KRESUME_RACES", CI_RACES))


class _Observer(threading.Thread):
    """Reads the pointer until stopped; records every distinct target in the order seen."""

    def __init__(self, run: RunStore) -> None:
        super().__init__(daemon=True)
        self.store, self.seen, self.stop, self.errors = run, [], threading.Event(), []

    def run(self) -> None:  # noqa: D401 - Thread API
        while not self.stop.is_set():
            try:
                ptr = self.store.read_pointer()
            except errors.StoreError as exc:  # a read failure is recorded and fails the test
                self.errors.append(exc)
                return
            if ptr is not None and (not self.seen or self.seen[-1] != ptr.checkpoint):
                self.seen.append(ptr.checkpoint)


def _shared_manifest(cid: str, writer: int) -> Manifest:
    return Manifest(id=cid, name="shared.data", kind="file", format="unknown", step=layout.parse_checkpoint_id(cid).step,
                    epoch=None, files=(FileEntry("", 1, "00000000"),), source={"writer": writer})


def test_two_writers_race_pointer_and_manifests(store_base, tmp_path: Path, caplog, atomic_preconditions) -> None:
    """On a server whose preconditions are not atomic (moto: tests/store/conftest.py) only what the
    fallback row of the docs table promises is asserted — every manifest whole, ``latest`` resolving
    the newest commit — and the pointer anomalies are counted and printed."""
    races = _races()
    rng = random.Random(f"races-{store_base.backend}")
    url = store_base.join("ns", f"race-{uuid.uuid4().hex[:8]}")
    writers = [RunStore.open(url, store_base.options) for _ in range(2)]
    shared_run = RunStore.open(store_base.join("ns", f"race-create-{uuid.uuid4().hex[:8]}"), store_base.options)
    observer = _Observer(RunStore.open(url, store_base.options))
    committed: dict[str, Manifest] = {}
    create_wins = create_conflicts = double_wins = pointer_lags = 0
    lock = threading.Lock()
    failures: list[BaseException] = []
    caplog.set_level(logging.DEBUG, logger="kresume.store")
    observer.start()
    try:
        for r in range(races):
            steps = [10 * r + rng.randrange(10) for _ in writers]
            shared_id = layout.new_checkpoint_id(r)
            barrier = threading.Barrier(len(writers))
            outcomes: list[str] = []

            def writer(w: int, step: int) -> None:
                src = tmp_path / f"w{w}" / f"r{r}" / f"step_{step}.data"
                src.parent.mkdir(parents=True, exist_ok=True)
                src.write_bytes(f"race {r} writer {w}".encode())
                try:
                    barrier.wait(timeout=60)
                    m = writers[w].commit(src)
                    with lock:
                        committed[m.id] = m
                    barrier.wait(timeout=60)
                    try:
                        store_commit.write_manifest(shared_run, _shared_manifest(shared_id, w))
                        outcome = f"won:{w}"
                    except errors.CommitConflict:
                        outcome = "conflict"
                    with lock:
                        outcomes.append(outcome)
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    failures.append(exc)

            threads = [threading.Thread(target=writer, args=(w, s)) for w, s in enumerate(steps)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not failures, failures
            # The newer of everything committed so far is named once both writers are done.
            newest = layout.sort_newest_first(list(committed))[0]
            assert writers[0].latest().checkpoint_id == newest  # readers resolve it on every backend
            if writers[0].read_pointer().checkpoint != newest:
                assert not atomic_preconditions, f"race {r}: pointer lags behind {newest}"
                pointer_lags += 1
            # Exactly one creation of the shared id won; the stored bytes are one writer's, whole.
            wins = [o for o in outcomes if o.startswith("won:")]
            stored = shared_run.read_manifest(shared_id)
            assert stored in (_shared_manifest(shared_id, 0), _shared_manifest(shared_id, 1))
            if len(wins) != 1:
                assert not atomic_preconditions and len(wins) == 2, f"race {r}: {outcomes}"
                double_wins += 1
            else:
                assert outcomes.count("conflict") == 1, f"race {r}: {outcomes}"
                assert stored == _shared_manifest(shared_id, int(wins[0].split(":")[1]))
            create_wins += len(wins)
            create_conflicts += outcomes.count("conflict")
    finally:
        observer.stop.set()
        observer.join(timeout=30)
    assert not observer.errors, observer.errors
    keys = [layout.parse_checkpoint_id(cid) for cid in observer.seen]
    backwards = sum(b < a for a, b in zip(keys, keys[1:]))
    assert backwards == 0 or not atomic_preconditions, f"the pointer moved backwards: {observer.seen}"
    # Every manifest that exists is whole (parses, all objects present with their sizes) and is
    # exactly what its commit returned.
    ids = writers[0].manifest_ids()
    assert sorted(ids) == sorted(committed)
    for cid in ids:
        loaded = writers[0].read_manifest(cid)
        assert loaded == committed[cid]
        assert not writers[0].verify(cid)
    lost = sum("pointer changed under us" in rec.getMessage() for rec in caplog.records)
    print(f"\n[races] {store_base.backend}: {races} races, {len(committed)} commits, pointer targets seen "
          f"{len(observer.seen)}, pointer writes that lost a race and re-read {lost}, "
          f"manifest creations won {create_wins} / refused {create_conflicts}"
          + ("" if atomic_preconditions else f"; server not atomic: both creations won {double_wins}, pointer "
                                            f"left behind {pointer_lags}, moved backwards {backwards}"))
