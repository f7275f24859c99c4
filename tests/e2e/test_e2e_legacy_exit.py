"""A Job with the legacy-mode sidecar ends (docs/preemption.md "When the trainer ends"): the real control plane
(v1.20: no native sidecars, so the webhook appends ``kresume-sidecar`` to ``containers``), the operator behind its
webhook, SeaweedFS, the Job controller, and the node agent, which (like a pre-1.29 kubelet) never stops a regular
container. Two Jobs with ``restartPolicy: Never`` and ``backoffLimit: 0``; their trainers call
``kresume.resume_from()`` (which holds the trainer lock), write a checkpoint, and

1. exit 0: the sidecar commits the checkpoint and exits 0, the pod is Succeeded and the Job Complete;
2. crash (exit 1): the sidecar commits what is complete and exits 0, the pod is Failed and the Job Failed
   (BackoffLimitExceeded): the crash counts against ``backoffLimit`` instead of leaving the pod Running for ever.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _fixtures.objstores import make_store_base
from _fixtures.operator import apply, kget, register_webhook, start_operator, wait_for
from kresume import contract
from kresume.devtools.node import NodeAgent, NodeSettings
from kresume.store.runstore import RunStore

SECRET = "store-keys"
TRAINER = r"""
import os, sys
import kresume
print("resume from", kresume.resume_from(timeout=20), flush=True)
d = os.path.join(os.environ["KRESUME_CHECKPOINT_DIR"], "step-10")
os.makedirs(d)
open(os.path.join(d, "weights.bin"), "wb").write(os.urandom(1 << 20))
open(os.path.join(d, ".kresume-complete"), "w").close()
print("wrote step-10", flush=True)
sys.exit(int(sys.argv[1]))
"""


def _job(name: str, ns: str, exit_code: int, options: dict, env: dict) -> dict:
    trainer_env = [{"name": contract.ENV_STORAGE_OPTIONS, "value": json.dumps(options)}]
    trainer_env += [{"name": k, "value": v} for k, v in sorted(env.items())]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": {contract.LABEL_INJECT: "true"}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 10, "containers": [
                    {"name": "trainer", "image": "python", "command": ["python", "-c", TRAINER, str(exit_code)],
                     "env": trainer_env}]}}}}  # fmt: skip


def _job_condition(cp, ns: str, name: str) -> str | None:
    for c in (kget(cp, "job", name, "-n", ns).get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            return f"{c['type']}:{c.get('reason') or ''}"
    return None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_job_with_the_legacy_sidecar_completes_when_its_trainer_finishes_and_fails_when_it_crashes(
        control_plane, crds_installed, k8s_namespace, objstore_pool, tmp_path: Path):
    cp, ns = control_plane, k8s_namespace
    base = make_store_base("s3-seaweedfs", objstore_pool, tmp_path)
    opts = {k: v for k, v in base.options.items() if k not in ("key", "secret")}
    apply(cp, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": ns},
               "stringData": {k: base.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}},
          {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
           "metadata": {"name": contract.DEFAULT_POLICY_NAME, "namespace": ns},
           "spec": {"storage": base.url, "storageOptions": opts, "credentialsSecret": SECRET,
                    "sidecar": {"extraEnv": [{"name": "KRESUME_METRICS_PORT", "value": "0"},
                                             {"name": "KRESUME_SETTLE_SECONDS", "value": "1"}]}}})
    cp.kubectl("label", "namespace", ns, f"kresume-test={ns}")
    with start_operator(cp, tmp_path, namespaces=[ns]) as op, register_webhook(cp, op, {"kresume-test": ns}):
        agent = NodeAgent(cp.api_client(), NodeSettings(namespaces=(ns,), work_dir=tmp_path / "work",
                                                        log_dir=tmp_path / "pods")).start()
        try:
            for name, code in (("finishes", 0), ("crashes", 1)):
                apply(cp, _job(name, ns, code, base.options, base.env))
            ended = {name: wait_for(f"Job {name} to end", lambda n=name: _job_condition(cp, ns, n), 300)
                     for name in ("finishes", "crashes")}
            assert ended["finishes"] == "Complete:"
            assert ended["crashes"].startswith("Failed:BackoffLimitExceeded"), ended
            for name, phase, trainer_exit in (("finishes", "Succeeded", 0), ("crashes", "Failed", 1)):
                (pod,) = kget(cp, "pods", "-n", ns, "-l", f"job-name={name}")["items"]
                assert pod["metadata"]["annotations"][contract.ANN_INJECTED] == "legacy"
                assert pod["status"]["phase"] == phase, json.dumps(pod["status"], indent=1)[-3000:]
                exits = {c["name"]: c["state"]["terminated"]["exitCode"] for c in pod["status"]["containerStatuses"]}
                assert exits == {"trainer": trainer_exit, contract.SIDECAR_CONTAINER_NAME: 0}, exits
                runner = agent.find(ns, pod["metadata"]["name"])
                assert runner is not None
                log = runner.log_path(contract.SIDECAR_CONTAINER_NAME).read_text()
                assert "restartPolicy Never will not restart it" in log, log[-3000:]
                assert "kresume sidecar: committed=1 " in log, log[-3000:]
                store = RunStore.open(f"{base.url}/{ns}/{name}/", base.options)
                assert [m.name for m in store.list()] == ["step-10"]
        finally:
            agent.stop()
