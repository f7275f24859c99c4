"""The operator at cluster scale: ``--runs`` CheckpointRuns and ``--pods`` opted-in pods in its watch.

Set-up as ``bench/webhook_latency.py`` (``bench/admission_env.py``: kube-apiserver + etcd, here with
kube-controller-manager too; moto behind a counting proxy), but the webhook configurations are registered
only after the load is in place. The load is created straight through the API by ``--threads`` clients:

* ``--pods`` pods, each the pod kresume's webhook would have made (``injection.inject`` on an opted-in pod:
  sidecar, env, ``injected`` annotation), one per run; no node, so they stay Pending (live);
* ``--runs`` CheckpointRuns (the first ``--pods`` of them the runs of those pods), each with the status the
  operator writes for such a pod (its admission in ``history``, ``worldSize``, ``checkpoints: 0``), so a
  restarted operator finds nothing to write. Their store prefixes are empty (no checkpoint committed yet).

Then the operator starts (``--event-window`` shorter than the load's age: a restart lists old pods, it posts
no Events for them) and the bench waits until it has *settled*: its ``/metrics`` show every run and pod in
its views (``kresume_indexed_objects``) and every pod's watch event handled (``kresume_pod_events_total``).
Reported (``/proc/<pid>``): RSS at settle and after the idle window (``VmRSS``) and the peak (``VmHWM``),
CPU-s per minute over ``--idle-seconds`` of idle (``utime + stime``; the background refresh of live runs is
what runs then: its store requests in the window are counted at the proxy), the time to settle, and then
admission latency at that size, ``--admissions`` pods each, one at a time (as ``bench/burst.py`` creates
them): a webhook that does nothing, store answers (pods of a run with live pods) and memory answers
(replacement pods of quiet runs prepared just before).

    .venv/bin/python bench/scale.py                      # smoke size: 200 runs, 200 pods
    nice -n 5 .venv/bin/python bench/scale.py --runs 10000 --pods 10000 --idle-seconds 60 --admissions 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes.client as k

from kresume import contract, identity, injection
from kresume.devtools._procs import free_ports
from kresume.operator import decisions
from kresume.policy import Policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import admission_env, burst, webhook_latency  # noqa: E402

NS = admission_env.NS
TICK = os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of process ``pid`` from ``/proc/<pid>/status``, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def scrape(port: int) -> dict[str, float]:
    """The operator's ``/metrics`` samples by name with labels (``name{label="v"}``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:  # noqa: S310 - local
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(kresume_[a-z_]+(?:\{[^}]*\})?) ([-+\deE.naN]+)$", line)
        if m:
            out[m[1]] = float(m[2])
    return out


def _policy(env: admission_env.Env) -> Policy:
    with env.cp.api_client() as api:
        obj = k.CustomObjectsApi(api).get_namespaced_custom_object(
            contract.GROUP, contract.VERSION, NS, contract.POLICY_PLURAL, contract.DEFAULT_POLICY_NAME)
    return Policy.from_spec(obj["spec"])


def injected_pod(policy: Policy, run: str, native: bool) -> dict[str, Any]:
    """The pod kresume's webhook makes of an opted-in pod of ``run`` that has no checkpoint yet."""
    pod = webhook_latency.pod(f"{run}-0", run)
    return injection.inject(pod, policy, None, run=run, namespace=NS, native_sidecar=native, image="kresume:bench").pod


def run_object(env: admission_env.Env, run: str, pod: dict[str, Any] | None) -> dict[str, Any]:
    """A CheckpointRun with the status the operator writes once it has seen ``pod`` (None: a run with no pod)."""
    source = identity.run_identity(pod).source if pod is not None else "annotation"  # type: ignore[union-attr]
    status: dict[str, Any] = {"checkpoints": 0}
    if pod is not None:
        entry = decisions.admission_entry(pod, decisions.now_iso())
        status = {**(decisions.record_admission(None, entry, limit=20) or {}), "worldSize": 1, "checkpoints": 0}
    return {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.RUN_KIND,
            "metadata": {"name": run, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "kresume"}},
            "spec": decisions.run_spec(run=run, policy=contract.DEFAULT_POLICY_NAME, url=env.run_url(run),
                                       source=source, group=None, rank=None),
            "status": status}


def load(env: admission_env.Env, runs: int, pods: int, threads: int) -> dict[str, Any]:
    """Create ``pods`` injected pods and ``runs`` CheckpointRuns (with status) from ``threads`` clients."""
    policy = _policy(env)
    native = decisions.native_sidecar("auto", decisions.server_version({"gitVersion": env.cp.version}))
    names = [f"scale-{i:05d}" for i in range(max(runs, pods))]
    errors: list[str] = []
    lock = threading.Lock()
    todo = iter(range(len(names)))
    group = (contract.GROUP, contract.VERSION, NS, contract.RUN_PLURAL)

    def client() -> None:
        with env.cp.api_client() as api:
            core, custom = k.CoreV1Api(api), k.CustomObjectsApi(api)
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    pod = injected_pod(policy, names[i], native) if i < pods else None
                    if pod is not None:
                        core.create_namespaced_pod(NS, pod, _preload_content=False)
                    if i < runs:
                        obj = run_object(env, names[i], pod)
                        created = json.loads(custom.create_namespaced_custom_object(
                            *group, obj, _preload_content=False).data)
                        created["status"] = obj["status"]
                        custom.replace_namespaced_custom_object_status(*group, names[i], created,
                                                                       _preload_content=False)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(f"{names[i]}: {type(exc).__name__}: {str(exc)[:200]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in [pool.submit(client) for _ in range(threads)]:
            pass
    took = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} objects could not be created, e.g. {errors[:3]}")
    return {"seconds": round(took, 1), "objects_per_s": round((runs + pods) / took, 1), "native_sidecar": native}


def settle(port: int, pid: int, runs: int, pods: int, timeout: float) -> dict[str, float]:
    """Wait until the operator's indexes hold ``runs`` runs and ``pods`` live pods and it has handled ``pods``
    pod events; the last sample. Raises TimeoutError (with the last sample) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    sample: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            sample = scrape(port)
        except OSError:
            sample = {}
        if (sample.get('kresume_indexed_objects{index="runs"}', 0) >= runs
                and sample.get('kresume_indexed_objects{index="live_pods"}', 0) >= pods
                and sample.get("kresume_pod_events_total", 0) >= pods):
            return sample
        if not Path(f"/proc/{pid}").exists():
            raise RuntimeError("the operator exited before it settled")
        time.sleep(1)
    raise TimeoutError(f"the operator did not settle in {timeout:g} s: {sample}")


def admissions(env: admission_env.Env, count: int) -> dict[str, Any]:
    """``count`` admissions each: no-op webhook, store answers (run ``busy``), memory answers (quiet runs)."""
    admission_env.commit_small(env, "busy")
    out: dict[str, Any] = {"noop": burst.burst(env, "noop", ["busy"] * count, 1e9, 1)}
    start = env.log.stat().st_size
    out["store"] = burst.burst(env, "kresume-store", ["busy"] * count, 1e9, 1)
    logged = {"store": _admissions_logged(env.log, start, {"busy"})}
    quiet = burst.prepare_quiet(env, count, 4)
    start = env.log.stat().st_size  # not the admissions of the quiet runs' old pods
    out["memory"] = burst.burst(env, "kresume-memory", quiet, 1e9, 1)
    logged["memory"] = _admissions_logged(env.log, start, set(quiet))
    for case, found in logged.items():
        sources: dict[str, int] = {}
        for src, _ in found:
            sources[src] = sources.get(src, 0) + 1
        out[case]["checkpoint_sources"] = sources
        out[case]["handler"] = webhook_latency.summary([ms for _, ms in found] or [0.0])
        out[case]["over_noop"] = {q: round(out[case][q] - out["noop"][q], 1) for q in ("p50_ms", "p99_ms")}
    return out


def _admissions_logged(log: Path, offset: int, keys: set[str]) -> list[tuple[str, float]]:
    """(checkpoint source, handler ms) of the admissions of runs ``keys`` the operator logged past byte ``offset``."""
    time.sleep(0.5)  # the last admission's line
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [(m["src"], float(m["ms"])) for m in map(webhook_latency.LINE.search, text.splitlines())
            if m and m["ns"] == NS and m["key"] in keys]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="CheckpointRuns created")
    ap.add_argument("--pods", type=int, default=200, help="opted-in (injected, Pending) pods created, one per run")
    ap.add_argument("--idle-seconds", type=float, default=20.0, help="idle window for the CPU figure, seconds")
    ap.add_argument("--admissions", type=int, default=20, help="pods created per admission case")
    ap.add_argument("--threads", type=int, default=16, help="concurrent clients creating the load")
    ap.add_argument("--settle-timeout", type=float, default=1800.0, help="seconds the operator may take to settle")
    ap.add_argument("--out", type=Path, default=Path("bench/results/scale.json"))
    args = ap.parse_args()
    if args.pods > args.runs:
        ap.error("--pods must be <= --runs (one pod per run)")
    work = Path(tempfile.mkdtemp(prefix="kresume-bench-scale-"))
    result: dict[str, Any] = {"runs": args.runs, "pods": args.pods, "idle_seconds": args.idle_seconds}
    with admission_env.running(work, webhooks=False, controller_manager=True) as env:
        result["server"] = env.cp.version
        result["load"] = load(env, args.runs, args.pods, args.threads)
        print("load", result["load"], flush=True)
        window = 5.0
        time.sleep(window)  # the load is older than the operator's event window: a restart's view
        (mport,) = free_ports(1)
        t0 = time.perf_counter()
        op = env.start_operator(["--metrics-port", str(mport), "--event-window", str(window)],
                                ready_timeout=args.settle_timeout)
        pid = op.pid
        sample = settle(mport, pid, args.runs, args.pods, args.settle_timeout)
        result["settle_seconds"] = round(time.perf_counter() - t0, 1)
        result["indexed"] = {key.split('"')[1]: int(v) for key, v in sample.items()
                             if key.startswith("kresume_indexed_objects")}
        result["rss_mib_settled"] = proc_memory(pid)
        print("settled", result["settle_seconds"], result["rss_mib_settled"], flush=True)
        cpu0, w0 = proc_cpu(pid), time.perf_counter()
        time.sleep(args.idle_seconds)
        cpu1, w1 = proc_cpu(pid), time.perf_counter()
        result["idle"] = {"cpu_s_per_min": round((cpu1 - cpu0) / (w1 - w0) * 60, 2),
                          "store_requests_per_min": round(env.proxy.count(w0, w1) / (w1 - w0) * 60, 1),
                          "rss_mib": proc_memory(pid)}
        print("idle", result["idle"], flush=True)
        env.register_webhooks()
        time.sleep(2)
        result["admissions"] = admissions(env, args.admissions)
        result["rss_mib_end"] = proc_memory(pid)
        result["refresh_errors"] = scrape(mport).get("kresume_refresh_errors_total", 0.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
