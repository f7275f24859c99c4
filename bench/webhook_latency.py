"""Webhook latency of ``inject-pod``: p50/p99 over N pod creations, warm and cold, on a real control plane.

Setup: kube-apiserver v1.20 + etcd (``kresume.dev.cluster``, no controller-manager), moto S3
(``kresume.dev.objstores``), the operator as a separate process (``python -m kresume.operator``) with
a URL webhook and our own CA, a ``CheckpointPolicy`` with a credentials Secret. Pods are bare pods with
``kresume.dev/run`` (no Job controller in the way), created one at a time.

* warm: every pod belongs to the same run, which has a committed checkpoint; the operator has
  answered for it before (store handles, connections and the result cache are warm).
* cold: every pod is a new run (nothing cached for it; the store finds no checkpoint).

Two numbers per case: the handler time the operator logs (``inject-pod … in X ms``: from the kopf
handler's start to its answer) and the client's ``create pod`` round trip (API server + webhook call).

    .venv/bin/python bench/webhook_latency.py [--pods 200] [--out bench/results/webhook_latency.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes.client as k
import yaml

from kresume import contract
from kresume.crds import __file__ as crds_init
from kresume.dev import objstores, pki
from kresume.dev.cluster import ControlPlane, ControlPlaneSettings
from kresume.operator import testing
from kresume.store.runstore import RunStore

LINE = re.compile(r"inject-pod (?P<ns>[^/]+)/(?P<key>\S+): (?P<outcome>\w+) \(checkpoint from (?P<src>[\w-]+)\) in (?P<ms>[\d.]+) ms")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50), 2), "p99_ms": round(pct(values, 99), 2),
            "mean_ms": round(statistics.fmean(values), 2), "max_ms": round(max(values), 2)}


def pod(name: str, run: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {contract.LABEL_INJECT: "true"}, "annotations": {contract.ANN_RUN: run}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "python:3.11-slim"}]}}


def create_pods(core: k.CoreV1Api, ns: str, runs: list[str], prefix: str) -> list[float]:
    times = []
    for i, run in enumerate(runs):
        t0 = time.perf_counter()
        created = core.create_namespaced_pod(ns, pod(f"{prefix}-{i}", run))
        times.append((time.perf_counter() - t0) * 1000)
        assert contract.ANN_INJECTED in (created.metadata.annotations or {}), f"pod {prefix}-{i} was not mutated"
    return times


def handler_times(log: Path, ns: str, keys: set[str]) -> list[float]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = LINE.search(line)
        if m and m["ns"] == ns and m["key"] in keys:
            out.append(float(m["ms"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("bench/results/webhook_latency.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kresume-bench-webhook-"))
    moto = objstores.SERVERS["s3-moto"]().start()
    cp = ControlPlane(ControlPlaneSettings(controller_manager=False)).start()
    proc = None
    try:
        bucket = "bench"
        moto.create_bucket(bucket)
        opts = moto.storage_options
        ns = "bench"
        cp.kubectl("create", "namespace", ns)
        cp.kubectl("label", "namespace", ns, "kresume-bench=yes")
        for f in sorted(Path(crds_init).parent.glob("*.yaml")):
            cp.kubectl("apply", "-f", str(f))
        for name in ("checkpointpolicies", "checkpointruns"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{name}.{contract.GROUP}", "--timeout=60s")
        tls = pki.make_webhook_tls(work)
        port = testing.free_port()
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": ns},
             "stringData": {"AWS_ACCESS_KEY_ID": opts["key"], "AWS_SECRET_ACCESS_KEY": opts["secret"]}},
            {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
             "metadata": {"name": "default", "namespace": ns},
             "spec": {"storage": f"s3://{bucket}/base", "credentialsSecret": "s3-creds",
                      "storageOptions": {"client_kwargs": opts["client_kwargs"], "config_kwargs": opts["config_kwargs"]}}},
            testing.webhook_configuration("kresume-bench", port, tls.ca_bundle, namespace_labels={"kresume-bench": "yes"}),
        ]))
        import torch

        ckpt = work / "epoch=1-step=100.ckpt"
        torch.save({"w": torch.zeros(1024)}, ckpt)
        RunStore.open(f"s3://{bucket}/base/{ns}/warm/", opts).commit(ckpt)

        proc = testing.OperatorProcess(
            args=["--webhook-host", "127.0.0.1", "--webhook-port", str(port), "--tls-cert-file", str(tls.cert_file),
                  "--tls-key-file", str(tls.key_file), "--namespace", ns, "--liveness-port", "0",
                  "--metrics-port", "0", "--standalone", "--sidecar-image", "kresume:bench"],
            env=cp.env(), log=work / "operator.log", webhook_port=port,
        ).start()
        time.sleep(3)  # let kopf list the policy (index) before the first admission
        with cp.api_client() as api:
            core = k.CoreV1Api(api)
            tag = uuid.uuid4().hex[:4]
            cold_runs = [f"cold-{tag}-{i}" for i in range(args.pods)]
            cold_client = create_pods(core, ns, cold_runs, f"cold-{tag}")
            warm_client = create_pods(core, ns, ["warm"] * args.pods, f"warm-{tag}")
        time.sleep(1)
        log = work / "operator.log"
        cold_handler = handler_times(log, ns, set(cold_runs))
        warm_handler = handler_times(log, ns, {"warm"})
        sources = {}
        for line in log.read_text(errors="replace").splitlines():
            m = LINE.search(line)
            if m:
                sources[m["src"]] = sources.get(m["src"], 0) + 1
        result = {
            "pods_per_case": args.pods,
            "server": cp.version,
            "cold": {"handler": summary(cold_handler), "create_round_trip": summary(cold_client)},
            "warm": {"handler": summary(warm_handler), "create_round_trip": summary(warm_client)},
            "first_admission_ms": cold_handler[0] if cold_handler else None,
            "checkpoint_sources": sources,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        if proc is not None:
            proc.stop()
        cp.stop()
        moto.stop()


if __name__ == "__main__":
    main()
