"""Webhook latency of ``inject-pod``: added latency per pod create on a real control plane, p50/p99.

Setup: kube-apiserver v1.20 + etcd (``kresume.devtools.cluster``, no controller-manager), moto S3
(``kresume.devtools.objstores``), the operator as a separate process (``python -m kresume.operator``) with
a URL webhook and our own CA, a ``CheckpointPolicy`` with a credentials Secret. Pods are bare pods with
``kresume.dev/run`` (no Job controller in the way), created one at a time. Cases:

* baseline: pods without the opt-in label (the webhook's objectSelector skips them: no webhook call);
  created in turn with the ``replacement`` pods, so both share the machine's noise.
* noop: pods that pass a mutating webhook that does nothing (``bench/noop_webhook.py``: bare aiohttp,
  same TLS certificate, the chart's configuration under another name and label), created in turn with
  the other two: "kresume adds X ms over a webhook that does nothing" is ``over_noop``.
* replacement: the common case after a preemption. Each pod of one run (which has a committed
  checkpoint) is deleted before the next is created, ``--gap`` seconds later: the run is quiet and the
  operator answers from memory once it has seen the old pod go and read the store again (a
  replacement that comes sooner asks the store). ``replacement_from_memory`` holds the pods answered
  from memory alone.
* busy: every pod belongs to one run whose earlier pods still exist (Pending: no kubelet), so the
  run may be committing and every admission asks the store.
* cold: every pod is a new run (nothing known; the store finds no checkpoint).

Two numbers per pod: the handler time the operator logs (``inject-pod … in X ms``: from the kopf
handler's start to its answer; ``(store Y ms)``: of which waiting for the store, for an answer from memory the
bad-mark GET) and the client's ``create pod`` round trip (API server + webhook call). For answers from memory
``handler_minus_store`` is what kresume costs besides that one request.
"Added" = a case's round-trip percentile minus the baseline's; ``over_noop`` = minus the no-op webhook's.
Store requests per admission are counted at a forwarding proxy in front of moto (``bench/countproxy.py``).

    .venv/bin/python bench/webhook_latency.py [--pods 200] [--gap 0.5] [--out bench/results/webhook_latency.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes.client as k

from kresume import contract

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import admission_env, noop_webhook  # noqa: E402

LINE = re.compile(r"inject-pod (?P<ns>[^/]+)/(?P<key>\S+): (?P<outcome>\w+) \(checkpoint from (?P<src>[\w-]+)\) in (?P<ms>[\d.]+) ms"
                  r"(?: \(store (?P<store_ms>[\d.]+) ms\))?")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50), 2), "p99_ms": round(pct(values, 99), 2),
            "mean_ms": round(statistics.fmean(values), 2), "max_ms": round(max(values), 2)}


def pod(name: str, run: str, opt_in: bool = True, noop: bool = False) -> dict[str, Any]:
    labels = {contract.LABEL_INJECT: "true"} if opt_in else {noop_webhook.LABEL: "true"} if noop \
        else {"kresume-bench": "baseline"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": {contract.ANN_RUN: run}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "trainer", "image": "python:3.11-slim"}]}}


REQUESTS: list[int] = []
"""Store requests counted (bench/countproxy.py) during each opted-in create, in creation order."""
PROXY: Any = None


def create_one(core: k.CoreV1Api, ns: str, name: str, run: str, opt_in: bool = True, noop: bool = False) -> float:
    """Create one pod; return the round trip in ms (asserting the webhook mutated an opted-in pod)."""
    t0 = time.perf_counter()
    created = core.create_namespaced_pod(ns, pod(name, run, opt_in, noop))
    t1 = time.perf_counter()
    took = (t1 - t0) * 1000
    if opt_in and PROXY is not None:
        REQUESTS.append(PROXY.count(t0, t1))
    if opt_in:
        assert contract.ANN_INJECTED in (created.metadata.annotations or {}), f"pod {name} was not mutated"
    return took


def create_pods(core: k.CoreV1Api, ns: str, runs: list[str], prefix: str) -> list[float]:
    return [create_one(core, ns, f"{prefix}-{i}", run) for i, run in enumerate(runs)]


def replacements(core: k.CoreV1Api, ns: str, run: str, prefix: str, count: int,
                 gap: float) -> tuple[list[float], list[float], list[float]]:
    """``count`` rounds of: create a pod of ``run``, delete it, wait ``gap`` s; and, in the same round in
    rotating order, a baseline pod (no webhook) and a pod passing only the no-op webhook, each created and
    deleted. Returns (replacement, baseline, no-op) round trips, ms."""
    out: dict[str, list[float]] = {"r": [], "b": [], "n": []}
    kinds = ["r", "b", "n"]
    for i in range(count):
        for kind in kinds[i % 3:] + kinds[:i % 3]:
            name = f"{prefix}-{kind}-{i}"
            out[kind].append(create_one(core, ns, name, run, opt_in=kind == "r", noop=kind == "n"))
            core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        time.sleep(gap)
    return out["r"], out["b"], out["n"]


def added(case: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """Percentiles of a case's round trip minus the baseline's, ms."""
    return {"p50_ms": round(case["p50_ms"] - base["p50_ms"], 2), "p99_ms": round(case["p99_ms"] - base["p99_ms"], 2)}


def _counts(values: list[int]) -> dict[str, float]:
    """Median and max of per-admission store request counts."""
    return {"p50": statistics.median(values), "max": max(values)} if values else {}


def handler_times(log: Path, ns: str, keys: set[str]) -> list[float]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = LINE.search(line)
        if m and m["ns"] == ns and m["key"] in keys:
            out.append(float(m["ms"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=200, help="pod creates per case")
    ap.add_argument("--gap", type=float, default=0.5,
                    help="seconds between deleting a run's pod and creating its replacement (replacement case)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/webhook_latency.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kresume-bench-webhook-"))
    global PROXY
    with admission_env.running(work) as env:
        cp, ns = env.cp, admission_env.NS
        PROXY = env.proxy
        for run in ("warm", "busy"):
            admission_env.commit_small(env, run)
        env.start_operator()
        with cp.api_client() as api:
            core = k.CoreV1Api(api)
            tag = uuid.uuid4().hex[:4]
            cold_runs = [f"cold-{tag}-{i}" for i in range(args.pods)]
            REQUESTS.clear()
            cold_client = create_pods(core, ns, cold_runs, f"cold-{tag}")
            requests = {"cold": list(REQUESTS)}
            REQUESTS.clear()
            repl_client, base_client, noop_client = replacements(core, ns, "warm", f"repl-{tag}", args.pods, args.gap)
            requests["replacement"] = list(REQUESTS)
            REQUESTS.clear()
            busy_client = create_pods(core, ns, ["busy"] * args.pods, f"busy-{tag}")
            requests["busy"] = list(REQUESTS)
        time.sleep(1)
        log = work / "operator.log"
        lines = log.read_text(errors="replace").splitlines()
        base = summary(base_client)
        noop_rt = summary(noop_client)
        result: dict[str, Any] = {"pods_per_case": args.pods, "gap_s": args.gap, "server": cp.version,
                                  "baseline": {"create_round_trip": base},
                                  "noop": {"create_round_trip": noop_rt, "added": added(noop_rt, base)}}
        for case, runs, client in (("replacement", {"warm"}, repl_client), ("busy", {"busy"}, busy_client),
                                   ("cold", set(cold_runs), cold_client)):
            rt = summary(client)
            sources: dict[str, int] = {}
            for line in lines:
                m = LINE.search(line)
                if m and m["ns"] == ns and m["key"] in runs:
                    sources[m["src"]] = sources.get(m["src"], 0) + 1
            result[case] = {"handler": summary(handler_times(log, ns, runs)), "create_round_trip": rt,
                            "added": added(rt, base), "over_noop": added(rt, noop_rt), "checkpoint_sources": sources,
                            "store_requests": _counts(requests[case])}
        # The replacement pods answered from memory alone (admissions are logged in creation order).
        order = [m["src"] for m in map(LINE.search, lines) if m and m["ns"] == ns and m["key"] == "warm"]
        if len(order) == len(repl_client):
            mem = [rt for rt, src in zip(repl_client, order) if src == "memory"]
            mem_lines = [m for m in map(LINE.search, lines)
                         if m and m["ns"] == ns and m["key"] == "warm" and m["src"] == "memory"]
            mem_handler = [float(m["ms"]) for m in mem_lines]
            mem_store = [float(m["store_ms"]) for m in mem_lines if m["store_ms"] is not None]
            mem_rest = [float(m["ms"]) - float(m["store_ms"]) for m in mem_lines if m["store_ms"] is not None]
            if mem:  # the handler of a memory answer includes its one bad-mark read (GET bad/<id>.json)
                result["replacement_from_memory"] = {"handler": summary(mem_handler),
                                                     "bad_mark_wait": summary(mem_store) if mem_store else None,
                                                     "handler_minus_store": summary(mem_rest) if mem_rest else None,
                                                     "create_round_trip": summary(mem),
                                                     "added": added(summary(mem), base),
                                                     "over_noop": added(summary(mem), noop_rt),
                                                     "store_requests": _counts(
                                                         [n for n, src in zip(requests["replacement"], order)
                                                          if src == "memory"])}
            store = [rt for rt, src in zip(repl_client, order) if src == "store"]
            if store:
                result["replacement_from_store"] = {"create_round_trip": summary(store),
                                                    "over_noop": added(summary(store), noop_rt),
                                                    "store_requests": _counts(
                                                        [n for n, src in zip(requests["replacement"], order)
                                                         if src == "store"])}
        result["first_admission_ms"] = (handler_times(log, ns, set(cold_runs)) or [None])[0]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
