"""``kresume restore``'s progress lines (bytes, rate, ETA) for container logs (issue 15 item 4)."""

from __future__ import annotations

import io

from kresume.cli.progresslog import ProgressLog, human, line


def test_line_gives_bytes_rate_and_eta():
    assert human(512) == "512 B" and human(1.5 * 2**20) == "1.5 MiB" and human(2**30) == "1 GiB"
    assert line("restore x", 512 * 2**20, 2**30, 2.5) == "restore x: 512 MiB of 1 GiB (50 %), 215 MB/s, ETA 2.5 s"
    assert line("restore x", 2**30, 2**30, 5.0).endswith("(100 %), 215 MB/s, done in 5.0 s")
    assert line("r", 0, 10, 0.0).endswith("0 MB/s, ETA unknown")


def test_progress_log_writes_at_most_every_interval_and_once_at_the_end():
    now = [0.0]
    out = io.StringIO()
    plog = ProgressLog("restore x", 100, every=2.0, stream=out, clock=lambda: now[0])
    for t in (0.5, 1.0, 2.1, 2.5, 4.2):
        now[0] = t
        plog.advance(10)
    now[0] = 5.0
    plog.advance(50)
    plog.finish("from the store")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines  # at 2.1, at 4.2, then the end
    assert lines[-1].endswith("done in 5.0 s (from the store)") and "100 B of 100 B" in lines[-1]
