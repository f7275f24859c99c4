"""The node-local tier end to end (issue 15 item 3): the real control plane, the operator process behind its webhook,
SeaweedFS, and two node agents (two "nodes", each with its own disk for hostPath volumes). A policy with
``nodeCache`` on; pods of one run pinned to a node:

1. pod 1 on node A writes a checkpoint; its sidecar commits it and keeps it in node A's cache;
2. pod 2 on node A (a replacement on the same node) restores it from the cache;
3. pod 3 on node B restores it from the store (nothing cached there);
4. the cache entry on node A is corrupted by hand; pod 4 on node A detects it (CRC-32C) and downloads instead.

Each restore's source is read where users read it: the restore container's termination message in the pod status,
the operator's ``Restored`` Event, ``CheckpointRun.status.restores``; the restored bytes are checked by the trainer.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from _fixtures.objstores import make_store_base
from _fixtures.operator import apply, kget, register_webhook, start_operator, wait_for
from kresume import contract
from kresume.devtools.node import NodeAgent, NodeSettings
from kresume.store.nodecache import NodeCache, run_key
from kresume.store.runstore import RunStore

RUN = "cache-run"
SECRET = "store-keys"
HOST_PATH = "/var/lib/kresume/cache"
# The trainer: with KRESUME_RESUME_PATH, print the SHA-256 of the restored data and exit; else write a marker
# checkpoint (8 MiB + the marker, written last) and wait to be deleted.
TRAINER = r"""
import hashlib, os, sys, time
path = os.environ.get("KRESUME_RESUME_PATH")
if path:
    print("restored", hashlib.sha256(open(os.path.join(path, "weights.bin"), "rb").read()).hexdigest(), flush=True)
    sys.exit(0)
d = os.path.join(os.environ["KRESUME_CHECKPOINT_DIR"], "step-10")
os.makedirs(d)
data = os.urandom(8 << 20)
open(os.path.join(d, "weights.bin"), "wb").write(data)
open(os.path.join(d, ".kresume-complete"), "w").close()
print("wrote", hashlib.sha256(data).hexdigest(), flush=True)
time.sleep(600)
"""


def _pod(name: str, node: str, ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": ns, "labels": {contract.LABEL_INJECT: "true"}, "annotations": {contract.ANN_RUN: RUN}},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 10,
                 "containers": [{"name": "trainer", "image": "python", "command": ["python", "-c", TRAINER]}]}}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_same_node_restores_from_the_cache_another_node_and_a_corrupt_entry_from_the_store(
        control_plane, crds_installed, k8s_namespace, objstore_pool, tmp_path: Path):
    cp, ns = control_plane, k8s_namespace
    base = make_store_base("s3-seaweedfs", objstore_pool, tmp_path)
    opts = {k: v for k, v in base.options.items() if k not in ("key", "secret")}
    apply(cp, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": ns},
               "stringData": {k: base.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}},
          {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
           "metadata": {"name": contract.DEFAULT_POLICY_NAME, "namespace": ns},
           "spec": {"storage": base.url, "storageOptions": opts, "credentialsSecret": SECRET,
                    "nodeCache": {"enabled": True, "hostPath": HOST_PATH, "maxBytes": 1 << 30},
                    "sidecar": {"extraEnv": [{"name": "KRESUME_METRICS_PORT", "value": "0"},
                                             {"name": "KRESUME_SETTLE_SECONDS", "value": "1"}]}}})
    cp.kubectl("label", "namespace", ns, f"kresume-test={ns}")
    disks = {n: tmp_path / f"disk-{n}" for n in ("node-a", "node-b")}
    with start_operator(cp, tmp_path, namespaces=[ns]) as op, register_webhook(cp, op, {"kresume-test": ns}):
        agents = {n: NodeAgent(cp.api_client(), NodeSettings(
            node_name=n, namespaces=(ns,), work_dir=tmp_path / f"work-{n}", log_dir=tmp_path / "pods",
            host_root=disks[n])).start() for n in disks}  # fmt: skip
        try:
            run_url = f"{base.url}/{ns}/{RUN}/"
            store = RunStore.open(run_url, base.options)
            cache_a = NodeCache(disks["node-a"] / HOST_PATH.lstrip("/"), 1 << 30)

            apply(cp, _pod("writer", "node-a", ns))
            wrote = wait_for("the trainer's write", lambda: _line(agents["node-a"], ns, "writer", "wrote "), 180)
            manifest = wait_for("the commit", lambda: (store.fs.invalidate_cache(), store.list() or [None])[1][-1], 120)
            wait_for("the node-A cache entry", lambda: cache_a.lookup(run_url, manifest), 60)
            cp.kubectl("delete", "pod", "writer", "-n", ns, "--wait=true", "--timeout=60s")

            sources = {}
            for pod, node in (("same-node", "node-a"), ("other-node", "node-b")):
                sources[pod] = _restore(cp, agents[node], ns, pod, node)
                assert _line(agents[node], ns, pod, "restored ") == wrote.replace("wrote", "restored")
            assert sources == {"same-node": "cache", "other-node": "store"}

            data = cache_a.entry_dir(run_url, manifest.id) / "data" / "step-10" / "weights.bin"
            data.unlink()  # the entry may share the writer's inode: give it bytes of its own, one of them wrong
            payload = bytearray(hashlib.sha256(b"x").digest() * (8 << 15))
            data.write_bytes(bytes(payload))
            assert _restore(cp, agents["node-a"], ns, "after-corruption", "node-a") == "store"
            assert _line(agents["node-a"], ns, "after-corruption", "restored ") == wrote.replace("wrote", "restored")
            assert cache_a.lookup(run_url, manifest) is None  # the bad entry was dropped
            assert not (disks["node-b"] / HOST_PATH.lstrip("/") / run_key(run_url) / manifest.id).exists()

            status = wait_for("CheckpointRun.status.restores", lambda: (
                lambda r: r if r.get("cache") == 1 and r.get("store") == 2 else None)(
                (kget(cp, "ckptrun", RUN, "-n", ns).get("status") or {}).get("restores") or {}), 60)
            assert set(status["pods"]) == {"same-node", "other-node", "after-corruption"}
            events = kget(cp, "events", "-n", ns, "--field-selector", "involvedObject.name=same-node")["items"]
            assert any(e["reason"] == "Restored" and "node-local cache" in e["message"] for e in events), events
        finally:
            for a in agents.values():
                a.stop()


def _restore(cp, agent: NodeAgent, ns: str, pod: str, node: str) -> str:
    """Create ``pod`` on ``node`` and wait until its trainer exited 0 (its sidecar, stopped right after, may not even
    have started: the pod's phase is not what this checks); the restore step's source from its status."""
    apply(cp, _pod(pod, node, ns))

    def trainer_done() -> dict | None:
        obj = kget(cp, "pod", pod, "-n", ns)
        states = {c["name"]: c.get("state") or {} for c in obj["status"].get("containerStatuses") or []}
        return obj if "terminated" in states.get("trainer", {}) else None

    obj = wait_for(f"the trainer of {pod} to end", trainer_done, 240)
    trainer = next(c for c in obj["status"]["containerStatuses"] if c["name"] == "trainer")
    assert trainer["state"]["terminated"]["exitCode"] == 0, json.dumps(obj["status"], indent=1)[-3000:]
    (restore,) = [c for c in obj["status"]["initContainerStatuses"] if c["name"] == contract.RESTORE_CONTAINER_NAME]
    result = json.loads(restore["state"]["terminated"]["message"])
    runner = agent.find(ns, pod)
    assert runner is not None
    log = runner.log_path(contract.RESTORE_CONTAINER_NAME).read_text()
    assert "restore step-10:" in log and ("node cache" in log or "store" in log), log
    return str(result["source"])


def _line(agent: NodeAgent, ns: str, pod: str, prefix: str) -> str | None:
    runner = agent.find(ns, pod)
    if runner is None:
        return None
    path = runner.log_path("trainer")
    if not path.exists():
        return None
    return next((line.strip() for line in path.read_text().splitlines() if line.startswith(prefix)), None)
