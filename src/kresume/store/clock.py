"""Time stamps the store writes into its documents (manifests, pointer, bad marks).

These are the *local* clock's readings, for humans and ordering hints only: no rule that deletes
or protects data compares them with another machine's clock (docs/store-protocol.md "Store clock").
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """The local UTC time as ISO-8601 with microseconds and offset (``2026-11-29T10:30:00.123456+00:00``)."""
    return datetime.now(UTC).isoformat()
