"""Webhook row: delegates to ``bench/webhook_latency.py``.

That module owns the measurement (pod creates on the real API server with and without the webhook;
cases replacement / busy / cold; handler time and create round trip, p50/p99 over ``--pods``
creates). It is run as a script with ``--pods 200`` (20 with ``--quick``) and ``--out`` in the
bench's work folder; its JSON is summarised here: one row per case, the added round trip (case −
baseline) judged against the target.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.report import Metric

Log = Callable[[str], None]
MODULE = Path(__file__).with_name("webhook_latency.py")


def measure(quick: bool, work: Path, log: Log) -> list[Metric]:
    """Metrics from the helper's JSON, or a 'not measured' note naming what is missing."""
    if not MODULE.exists():
        return [Metric("webhook added latency per pod create", "not measured", "≤ 10 ms p99", None,
                       "bench/webhook_latency.py (operator helper) not present yet")]
    out_json = work / "webhook_latency.json"
    pods = 20 if quick else 200
    argv = [sys.executable, str(MODULE), "--pods", str(pods), "--out", str(out_json)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    result = json.loads(out_json.read_text())
    metrics = []
    base = result["baseline"]["create_round_trip"]
    metrics.append(Metric(f"pod create without webhook ({pods} creates)",
                          f"p50 {_ms(base, 'p50_ms')} / p99 {_ms(base, 'p99_ms')}", "–", None,
                          "baseline: pods outside the webhook's objectSelector, alternating with the replacement pods"))
    for case, what in (("replacement", "replacement pod of a quiet run"), ("busy", "pod of a run with live pods"),
                       ("cold", "pod of a new run")):
        h, add = result[case]["handler"], result[case]["added"]
        sources = ", ".join(f"{k} {v}" for k, v in sorted(result[case].get("checkpoint_sources", {}).items()))
        value = (f"added p50 {_ms(add, 'p50_ms')} / p99 {_ms(add, 'p99_ms')}; "
                 f"handler p50 {_ms(h, 'p50_ms')} / p99 {_ms(h, 'p99_ms')}")
        p99 = add.get("p99_ms") if isinstance(add, dict) else None
        metrics.append(Metric(f"webhook, {what} ({pods} creates)", value, "≤ 10 ms p99 added",
                              None if p99 is None else p99 <= 10.0,
                              f"answers from: {sources or '?'}; bench/webhook_latency.py on {result.get('server', '?')}"))
    mem = result.get("replacement_from_memory")
    if mem:
        add, rt = mem["added"], mem["create_round_trip"]
        p99 = add.get("p99_ms")
        metrics.insert(2, Metric(f"webhook, replacement answered from memory ({rt.get('n', '?')} creates)",
                                 f"added p50 {_ms(add, 'p50_ms')} / p99 {_ms(add, 'p99_ms')}", "≤ 10 ms p99 added",
                                 None if p99 is None else p99 <= 10.0,
                                 "the replacement pods whose admission did not call the store"))
    log(f"  webhook: {metrics[1].value}")
    return metrics


def _ms(summary: object, key: str) -> str:
    value = summary.get(key) if isinstance(summary, dict) else None
    return "?" if value is None else f"{value:.1f} ms"
