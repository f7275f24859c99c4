"""Burst of pod creations after a mass preemption: the rate the API server reaches with no webhook, with a
webhook that does nothing, and with kresume (answers from memory and from the store), and how many
admissions ran past the webhook's timeout.

Set-up as ``bench/webhook_latency.py`` (``bench/admission_env.py``). ``--threads`` clients create pods
back to back for ``--seconds`` per mode (the API server's own limit is what is measured; target 200/s):

* ``none``: pods no webhook selects;
* ``noop``: pods passing only the no-op webhook (``bench/noop_webhook.py``);
* ``kresume-store``: pods of one run with live pods (every admission asks the store; concurrent ones share
  one lookup);
* ``kresume-memory``: the replacement pod of each of ``--quiet-runs`` quiet runs prepared just before
  (each has a committed checkpoint and saw its old pod go, so the operator answers from memory; the
  operator runs with ``--quiet-max-age 900`` so answers do not age out while the burst lasts).

An opted-in pod that comes back without kresume's ``injected`` annotation was admitted past the
webhook's timeout (``failurePolicy: Ignore``: it starts without kresume) or hit an error; both are counted.

    .venv/bin/python bench/burst.py [--seconds 60] [--threads 16] [--quiet-runs 400] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes.client as k

from kresume import contract

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import admission_env, noop_webhook  # noqa: E402


def _pod(name: str, run: str, mode: str) -> dict[str, Any]:
    labels = {"none": {"kresume-bench": "baseline"}, "noop": {noop_webhook.LABEL: "true"}}.get(
        mode, {contract.LABEL_INJECT: "true"})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": {contract.ANN_RUN: run}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "python:3.11-slim"}]}}


def burst(env: admission_env.Env, mode: str, runs: list[str] | None, seconds: float, threads: int) -> dict[str, Any]:
    """Create pods of ``mode`` from ``threads`` clients for ``seconds`` (or until ``runs`` are used up)."""
    tag = uuid.uuid4().hex[:5]
    lock = threading.Lock()
    queue = list(reversed(runs)) if runs is not None else None
    created = [0]
    not_injected = [0]
    errors: list[str] = []
    latencies: list[float] = []
    stop = [0.0]
    counter = iter(range(10**9))
    ready, go = threading.Barrier(threads + 1), threading.Event()

    def client() -> None:
        with env.cp.api_client() as api:
            core = k.CoreV1Api(api)
            ready.wait()  # the clock starts once every client is set up (a loaded machine took seconds)
            go.wait()
            while time.perf_counter() < stop[0]:
                with lock:
                    if queue is not None and not queue:
                        return
                    run = queue.pop() if queue is not None else "busy"
                    i = next(counter)
                t0 = time.perf_counter()
                try:
                    out = core.create_namespaced_pod(admission_env.NS, _pod(f"{mode}-{tag}-{i}", run, mode))
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    continue
                took = time.perf_counter() - t0
                injected = contract.ANN_INJECTED in (out.metadata.annotations or {})
                with lock:
                    created[0] += 1
                    latencies.append(took * 1000)
                    if mode.startswith("kresume") and not injected:
                        not_injected[0] += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    t0 = time.perf_counter()
    stop[0] = t0 + seconds
    go.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"created": created[0], "seconds": round(elapsed, 1), "rate_per_s": round(created[0] / elapsed, 1),
            "past_timeout_or_unmutated": not_injected[0], "errors": len(errors), "error_sample": errors[:3],
            "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None}


def prepare_quiet(env: admission_env.Env, count: int, threads: int) -> list[str]:
    """``count`` runs with a committed checkpoint whose one pod was created and deleted (so each is quiet
    and refreshed by the operator before the burst)."""
    runs = [f"quiet-{uuid.uuid4().hex[:6]}-{i}" for i in range(count)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda r: admission_env.commit_small(env, r), runs))

    def cycle(chunk: list[str]) -> None:
        with env.cp.api_client() as api:
            core = k.CoreV1Api(api)
            for run in chunk:
                core.create_namespaced_pod(admission_env.NS, _pod(f"{run}-old", run, "kresume"))
                core.delete_namespaced_pod(f"{run}-old", admission_env.NS, grace_period_seconds=0)

    chunks = [runs[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=cycle, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    time.sleep(5)  # the operator sees the deletions and re-reads each run
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds per mode")
    ap.add_argument("--threads", type=int, default=16, help="concurrent creating clients")
    ap.add_argument("--quiet-runs", type=int, default=400, help="prepared quiet runs (memory mode)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/burst.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kresume-bench-burst-"))
    result: dict[str, Any] = {"threads": args.threads, "seconds_per_mode": args.seconds}
    with admission_env.running(work) as env:
        admission_env.commit_small(env, "busy")
        # Answers of quiet runs stay usable from memory for --quiet-max-age s (default 30): long enough here
        # for every prepared run to be admitted once, whatever the burst's rate.
        op = env.start_operator(["--quiet-max-age", "900"])
        for mode in ("none", "noop", "kresume-store", "kresume-memory", "none"):
            runs = prepare_quiet(env, args.quiet_runs, args.threads) if mode == "kresume-memory" else None
            result[mode if mode not in result else "none-again"] = burst(env, mode, runs, args.seconds, args.threads)
            print(mode, result.get(mode if mode != "none" or "none-again" not in result else "none-again"), flush=True)
        lines = env.log.read_text(errors="replace")
        result["operator_memory_answers"] = lines.count("(checkpoint from memory)")
        result["operator_store_answers"] = lines.count("(checkpoint from store)")
        result["operator_pid"] = getattr(op, "pid", None)
        result["server"] = env.cp.version
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
