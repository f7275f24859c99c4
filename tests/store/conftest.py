"""Store-suite wiring: ``KRESUME_FAKE_ID_CLOCK`` shifts the store's local wall clock (ids, epoch
tokens, document stamps: :func:`kresume.store.clock.set_source`) so it starts at the given UTC instant
and runs on from there, to prove that no store test depends on the year (issue 11 item 10: a test built an
"old" id by replacing 2026 with 2020 and would have failed from 1 January 2027).

    KRESUME_FAKE_ID_CLOCK=2027-01-01T00:00:00Z .venv/bin/python -m pytest tests/store

The store servers keep their real clocks: the age rules (pins, orphans) compare the store's own
timestamps only, so they must pass either way. ``test_store_fake_clock.py`` runs a seeded part of
the suite this way in CI.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest

ENV_FAKE_ID_CLOCK = "KRESUME_FAKE_ID_CLOCK"


@pytest.fixture(autouse=True)
def _fake_id_clock():
    value = os.environ.get(ENV_FAKE_ID_CLOCK)
    if not value:
        yield
        return
    from kresume.store import clock

    start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    offset_ns = int((start - datetime.now(UTC)).total_seconds() * 1e9)
    clock.set_source(lambda: time.time_ns() + offset_ns)
    try:
        yield
    finally:
        clock.set_source(None)


NON_ATOMIC_SERVERS = {
    "s3-moto": "moto 5.2.5 checks If-None-Match / If-Match and then writes without a lock (moto/s3/responses.py "
               "put_object); measured: of 300 concurrent pairs, 2 create-only pairs and 1 if-match pair both "
               "succeeded (SeaweedFS, fake-gcs-server, Azurite: 0 of 300)",
}
"""Local servers whose preconditions are checked but not atomic under concurrent requests (AWS S3 is)."""


@pytest.fixture
def atomic_preconditions(store_base) -> bool:
    """Whether the backend under test applies preconditions atomically (see :data:`NON_ATOMIC_SERVERS`);
    on the others a race test asserts what still holds without them (docs/store-protocol.md table)."""
    return store_base.backend not in NON_ATOMIC_SERVERS
