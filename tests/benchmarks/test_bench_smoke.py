"""Smoke run of ``python -m bench --quick``: every row runs end to end with tiny inputs, so the
bench cannot rot. Real servers (SeaweedFS, rclone serve s3), real tools (kresume, s5cmd, rclone),
the real sidecar and the example trainer. No timing is asserted: only that each row produced
numbers. The webhook row (a control plane + the operator) is smoke-run on its own below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bench_quick_prints_every_row(tmp_path: Path) -> None:
    out_md = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "transfer,clients,durable,memory,training",
         "--client-servers", "seaweedfs,azurite", "--workdir", str(tmp_path / "work"), "--write", str(out_md)],
        cwd=ROOT, capture_output=True, text=True, timeout=1100, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out_md.read_text()
    for server in ("seaweedfs", "rclone"):
        for row in ("upload file 8 MB", "restore file 8 MB", "upload folder 4 x 1 MB", "restore folder 4 x 1 MB"):
            assert f"| {row} | {server} |" in text, f"missing {row} on {server}"
    for tool in ("kresume", "s5cmd", "rclone", "fsspec", "cp"):
        assert f"| {tool} |" in text
    for metric in ("sidecar overhead", "sidecar peak RSS, 16 MB ckpt", "`kresume commit` peak RSS",
                   "sidecar peak RSS, folder of 4 x 2 MB", "client cost, restore 8 MB file, seaweedfs",
                   "client cost, in-process lookup (RunStore.latest), azurite",
                   "training overhead", "sidecar CPU: idle / per committed checkpoint"):
        assert metric in text
    assert "load average at end" in text
    # Inputs and downloads are removed as the rows finish.
    left = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert left == [], left


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_webhook_bench_measures_every_case_against_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "webhook.json"
    proc = subprocess.run([sys.executable, "bench/webhook_latency.py", "--pods", "4", "--gap", "0.3", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=800, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["baseline"]["create_round_trip"]["n"] == 4
    for case in ("replacement", "busy", "cold"):
        assert result[case]["create_round_trip"]["n"] == 4, case
        assert result[case]["handler"]["n"] == 4, f"{case}: the operator logged no admission time"
        assert set(result[case]["added"]) == {"p50_ms", "p99_ms"}
        assert sum(result[case]["checkpoint_sources"].values()) == 4
    # Pods of runs that may be committing always ask the store.
    assert result["busy"]["checkpoint_sources"] == {"store": 4}
    assert result["noop"]["create_round_trip"]["n"] == 4  # the no-op webhook's pods, same run
    assert set(result["busy"]["over_noop"]) == {"p50_ms", "p99_ms"}
    assert result["busy"]["store_requests"]["p50"] >= 3  # pointer + two listings, counted at the proxy


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_burst_bench_reports_a_rate_per_mode(tmp_path: Path) -> None:
    out = tmp_path / "burst.json"
    proc = subprocess.run([sys.executable, "bench/burst.py", "--seconds", "2", "--threads", "4", "--quiet-runs", "4",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=800, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    for mode in ("none", "noop", "kresume-store", "kresume-memory"):
        assert result[mode]["created"] > 0 and result[mode]["errors"] == 0, (mode, result[mode])
        assert result[mode]["rate_per_s"] > 0
    assert result["kresume-memory"]["created"] == 4


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_parts_commit_bench_measures_latency_and_requests(tmp_path: Path) -> None:
    out = tmp_path / "parts.json"
    proc = subprocess.run([sys.executable, "bench/parts_commit.py", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=500, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert [r["world"] for r in result["rows"]] == [2, 8]
    for row in result["rows"]:
        assert row["latency_ms_median"] > 0 and row["requests_median"] >= 2 * row["world"]
        assert row["by_operation"]["PutObject"] >= 2 * row["world"]  # each rank: its file and its part
    assert "requests_at_1000" in result["fit"] and "| 8 |" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scale_bench_settles_with_every_run_and_pod_and_answers_every_admission(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, "bench/scale.py", "--runs", "30", "--pods", "20", "--idle-seconds", "3",
                           "--admissions", "3", "--threads", "4", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=800, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["indexed"] == {"policies": 1, "runs": 30, "live_pods": 20}  # the settle signal, from /metrics
    assert result["settle_seconds"] > 0
    for key in ("rss_mib_settled", "rss_mib_end"):
        assert set(result[key]) == {"VmRSS", "VmHWM"} and result[key]["VmRSS"] > 0
    assert result["idle"]["cpu_s_per_min"] >= 0 and "store_requests_per_min" in result["idle"]
    for case in ("noop", "store", "memory"):
        got = result["admissions"][case]
        assert got["created"] == 3 and got["errors"] == 0 and got["past_timeout_or_unmutated"] == 0, (case, got)
    assert result["admissions"]["store"]["checkpoint_sources"] == {"store": 3}  # a run with live pods
    assert sum(result["admissions"]["memory"]["checkpoint_sources"].values()) == 3
    assert result["admissions"]["memory"]["handler"]["n"] == 3


@pytest.mark.slow
def test_aliases_bench_counts_one_copy_per_save_from_the_second(tmp_path: Path) -> None:
    out = tmp_path / "aliases.json"
    proc = subprocess.run([sys.executable, "bench/aliases_row.py", "--saves", "2", "--mb", "2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=500, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    before, after = result["before"], result["after"]
    assert before["uploaded"] == before["stored"] == before["logical"] == sum(result["file_bytes"])
    assert sum(c["alias"] for c in after["commits"]) == 1  # save 2's second file; save 1's pair differs
    assert after["stored"] == after["uploaded"] == before["uploaded"] - result["file_bytes"][-1]


@pytest.mark.timeout(600)
def test_restore_threads_bench_reports_cpu_by_thread() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.restore_threads", "--shapes", "file", "--mb", "100",
                           "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=500, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| file | 1 |")]
    assert len(rows) == 1, proc.stdout
    assert "MainThread" in rows[0] and "kresume-range" in rows[0], rows[0]  # the ranges ran in their own threads
