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
        h, add = result[case]["handler"], result[case].get("over_noop") or result[case]["added"]
        sources = ", ".join(f"{k} {v}" for k, v in sorted(result[case].get("checkpoint_sources", {}).items()))
        reqs = result[case].get("store_requests") or {}
        value = (f"over the no-op webhook p50 {_ms(add, 'p50_ms')} / p99 {_ms(add, 'p99_ms')}; "
                 f"handler p50 {_ms(h, 'p50_ms')} / p99 {_ms(h, 'p99_ms')}; "
                 f"store requests p50 {reqs.get('p50', '?')}")
        p99 = add.get("p99_ms") if isinstance(add, dict) else None
        metrics.append(Metric(f"webhook, {what} ({pods} creates)", value, "≤ 10 ms p99 added",
                              None if p99 is None else p99 <= 10.0,
                              f"answers from: {sources or '?'}; bench/webhook_latency.py on {result.get('server', '?')}"))
    noop = result.get("noop")
    if noop:
        add = noop["added"]
        metrics.insert(1, Metric(f"pod create through a no-op webhook ({pods} creates)",
                                 f"added p50 {_ms(add, 'p50_ms')} / p99 {_ms(add, 'p99_ms')} over no webhook", "–",
                                 None, "bench/noop_webhook.py: bare aiohttp, same TLS and webhook configuration; "
                                       "the cost of any webhook call"))
    for key, what, target in (("replacement_from_memory", "answered from memory", 10.0),
                              ("replacement_from_store", "answered from the store", None)):
        mem = result.get(key)
        if not mem:
            continue
        over, rt = mem.get("over_noop") or mem["added"], mem["create_round_trip"]
        p99 = over.get("p99_ms")
        reqs = mem.get("store_requests") or {}
        metrics.insert(3, Metric(f"webhook, replacement {what} ({rt.get('n', '?')} creates)",
                                 f"kresume adds p50 {_ms(over, 'p50_ms')} / p99 {_ms(over, 'p99_ms')} over the no-op "
                                 f"webhook; store requests p50 {reqs.get('p50', '?')} / max {reqs.get('max', '?')}",
                                 "≤ 10 ms p99 added" if target else "≤ 1 round trip",
                                 (p99 <= target) if (target and p99 is not None) else None,
                                 "the replacement pods by answer source; requests counted at a proxy before moto"))
    log(f"  webhook: {metrics[1].value}")
    return metrics


def _ms(summary: object, key: str) -> str:
    value = summary.get(key) if isinstance(summary, dict) else None
    return "?" if value is None else f"{value:.1f} ms"
