"""Pure parts of the bench and of the upload path it tuned: medians/ratios, part sizing, exact RSS."""

from __future__ import annotations

import sys
from pathlib import Path

from kresume.store import transfer

# The repo-root ``bench`` package is not on pytest's pythonpath (``tests``).
sys.path.append(str(Path(__file__).resolve().parents[2]))
from bench import procs  # noqa: E402
from bench.report import ToolResult, TransferRow  # noqa: E402


def test_ratio_is_peer_time_over_ours() -> None:
    ours = ToolResult("kresume", 10**9, [procs.Sample(s, 1.0, 1) for s in (10.0, 12.0, 11.0)])
    peer = ToolResult("s5cmd", 10**9, [procs.Sample(s, 1.0, 1) for s in (22.0, 20.0, 21.0)])
    row = TransferRow("upload", "seaweedfs", {"kresume": ours, "s5cmd": peer})
    assert row.ratio("s5cmd") == 21.0 / 11.0
    assert row.ratio("rclone") is None
    assert round(ours.mb_per_s) == round(1000 / 11)


def test_part_size_grows_past_10000_parts() -> None:
    mib = 2**20
    assert transfer.part_size_for(10**9, 8 * mib) == 8 * mib
    big = 200 * 2**30
    size = transfer.part_size_for(big, 8 * mib)
    assert size % mib == 0 and -(-big // size) <= transfer.MAX_PARTS
    assert transfer.part_size_for(big, size) == size


def test_run_reports_the_commands_own_peak_rss_not_ours() -> None:
    ballast = bytearray(300 * 2**20)  # this process is large; a forked child would inherit the mark
    small = procs.run([sys.executable, "-I", "-S", "-c", "pass"])
    big = procs.run([sys.executable, "-c", "x = bytearray(200 * 2**20); x[::4096] = b'1' * len(x[::4096])"])
    assert small.max_rss < 100 * 2**20
    assert big.max_rss > 200 * 2**20
    del ballast


def _demo_result(preemptions: list[tuple[str, int | None, float | None]]) -> dict:
    """A ``kresume demo --json-out`` result with only the keys bench.preemption_table reads."""
    from kresume.devtools.demo import timeline

    def split(total: float | None) -> dict | None:
        if total is None:
            return None
        parts = {k: 0.1 for k, _ in timeline.PARTS}
        return {**parts, "total_s": total, "kresume_s": 0.3, "answer": "injected/memory"}

    return {"settings": {"every_n_steps": 20},
            "preemptions": [{"index": i, "mode": m, "lost_steps": lost, "timeline": split(total)}
                            for i, (m, lost, total) in enumerate(preemptions, 1)]}


def test_preemption_table_counts_modes_and_flags_a_lost_step_after_sigterm() -> None:
    from bench import preemption_table

    ok = _demo_result([("step", 0, 10.0), ("upload", 0, 14.0), ("kill", 20, None), ("step", 0, 12.0)])
    assert preemption_table.lost_by_mode([ok]) == {"step": [0, 0], "upload": [0], "kill": [20]}
    assert preemption_table.acceptance_problems([ok]) == []
    med, worst, n = preemption_table.split_stats([ok])["total_s"]
    assert (med, worst, n) == (12.0, 14.0, 3)
    bad = _demo_result([("write", 1, 9.0), ("kill", 21, 9.0), ("step", None, None)])
    problems = preemption_table.acceptance_problems([bad])
    assert len(problems) == 3 and "expected 0" in problems[0] and "at most one checkpoint interval" in problems[1]
    assert "lost steps unknown" in problems[2]
    assert "| write (SIGTERM while a checkpoint is written) | 1 | 1 | 0 |" in preemption_table.markdown([bad])
