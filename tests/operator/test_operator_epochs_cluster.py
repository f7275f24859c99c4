"""Every rank of a run resumes from the same checkpoint (issue 14 items 1 and 4), on the real control plane.

The operator process behind the chart's webhook, moto S3, v1.20's controllers (no Indexed Jobs there, so a
2-replica StatefulSet with ``podManagementPolicy: Parallel`` and, for exact timing, two bare pods with the rank
annotations):

1. both pods of the StatefulSet are injected the same checkpoint and the same ``KRESUME_EPOCH`` token, with
   ``KRESUME_RANK`` 0/1 and ``KRESUME_WORLD_SIZE`` 2, into one run named after the StatefulSet;
2. a commit landing between the admissions of rank 0 and rank 1 does not split them;
3. replacing one pod starts a new epoch with the newest checkpoint, which the other's replacement joins;
   ``CheckpointRun.status.epoch`` mirrors it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from _fixtures.objstores import SESSION_BUCKET
from _fixtures.operator import RunningOperator, env_of, kget, s3_policy, wait_for
from kresume import contract
from kresume.devtools.cluster import ControlPlane
from kresume.store.runstore import RunStore


def statefulset(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": 2, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, contract.LABEL_INJECT: "true"}},
                                  "spec": {"terminationGracePeriodSeconds": 0,
                                           "containers": [{"name": "trainer", "image": "python:3.11-slim"}]}}}}


def ranked(name: str, run: str, rank: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {contract.LABEL_INJECT: "true"},
                         "annotations": {contract.ANN_RUN: run, contract.ANN_RANK: str(rank),
                                         contract.ANN_WORLD_SIZE: "2"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "trainer", "image": "x"}]}}


def place(pod: dict[str, Any]) -> tuple[str | None, str | None, str | None, str | None]:
    """(resume URL, epoch token, rank, world size) the trainer of ``pod`` got."""
    env = env_of(pod)
    return (env.get(contract.ENV_RESUME_FROM), env.get(contract.ENV_EPOCH), env.get(contract.ENV_RANK),
            env.get(contract.ENV_WORLD_SIZE))


def test_ranks_share_checkpoint_and_epoch_and_a_replacement_starts_one_the_other_joins(
    control_plane: ControlPlane, k8s_namespace: str, webhook_operator: RunningOperator, moto_s3: Any, tmp_path: Path
):
    import torch

    cp, ns, op = control_plane, k8s_namespace, webhook_operator
    base = f"s3://{SESSION_BUCKET}/epochs-{uuid.uuid4().hex[:8]}"
    s3_policy(cp, ns, base, moto_s3)
    op.proc.wait_serving(cp.kubectl, ns)

    def commit(run: str, step: int) -> str:
        store = RunStore.open(f"{base}/{ns}/{run}/", moto_s3.storage_options)
        path = tmp_path / f"epoch=0-step={step}.ckpt"
        torch.save({"w": torch.zeros(2), "global_step": step}, path)
        return store.checkpoint_url(store.commit(path))

    def pods(prefix: str) -> dict[str, dict[str, Any]]:
        items = kget(cp, "pods", "-n", ns)["items"]
        return {p["metadata"]["name"]: p for p in items
                if p["metadata"]["name"].startswith(prefix) and not p["metadata"].get("deletionTimestamp")}

    # 1. A StatefulSet of 2: one run, one epoch, one checkpoint.
    a = commit("ranks", 10)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(statefulset("ranks")))
    both = wait_for("both StatefulSet pods", lambda: (lambda ps: ps if len(ps) == 2 else None)(pods("ranks-")))
    first = {name: place(p) for name, p in both.items()}
    print("first epoch:", json.dumps(first, indent=1))
    assert first["ranks-0"][0] == first["ranks-1"][0] == a, op.tail()
    token = first["ranks-0"][1]
    assert token and first["ranks-1"][1] == token
    assert (first["ranks-0"][2:], first["ranks-1"][2:]) == (("0", "2"), ("1", "2"))
    sidecar = next(c for c in both["ranks-1"]["spec"]["containers"] if c["name"] == contract.SIDECAR_CONTAINER_NAME)
    side_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert side_env[contract.ENV_EPOCH] == token and side_env[contract.ENV_RESUME_FROM] == a
    assert both["ranks-0"]["metadata"]["annotations"][contract.ANN_EPOCH] == token

    # 2. A commit between two ranks' admissions does not split them.
    p0 = json.loads(cp.kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=json.dumps(ranked("pair-0", "pair", 0))).stdout)
    newer = commit("pair", 30)
    p1 = json.loads(cp.kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=json.dumps(ranked("pair-1", "pair", 1))).stdout)
    assert place(p0)[1] == place(p1)[1] and place(p0)[0] == place(p1)[0] is None  # both: the fresh start
    assert newer != place(p1)[0]

    # 3. Replacing rank 1 starts a new epoch from the newest checkpoint; rank 0's replacement joins it.
    b = commit("ranks", 20)
    uid1 = both["ranks-1"]["metadata"]["uid"]
    cp.kubectl("delete", "pod", "-n", ns, "ranks-1", "--wait=true")
    new1 = wait_for("the replacement of rank 1", lambda: (lambda p: p if p and p["metadata"]["uid"] != uid1 else None)(
        pods("ranks-").get("ranks-1")))
    assert place(new1)[0] == b and place(new1)[1] != token, op.tail()
    second = place(new1)[1]
    uid0 = both["ranks-0"]["metadata"]["uid"]
    cp.kubectl("delete", "pod", "-n", ns, "ranks-0", "--wait=true")
    new0 = wait_for("the replacement of rank 0", lambda: (lambda p: p if p and p["metadata"]["uid"] != uid0 else None)(
        pods("ranks-").get("ranks-0")))
    assert place(new0)[:2] == (b, second), op.tail()
    run = kget(cp, contract.RUN_PLURAL, "-n", ns, "ranks")
    epoch = run["status"]["epoch"]
    assert epoch["token"] == second and epoch["ranks"] == [0, 1] and epoch["worldSize"] == 2
    assert epoch["url"] == b
    assert run["status"]["worldSize"] == 2  # `kubectl get ckptrun`: WORLD 2
    # Each new epoch asked the store (the first one, and rank 1's replacement's); rank 0's replacement joined. A
    # StatefulSet whose cache still held the old pod may create a replacement twice (AlreadyExists, then again): the
    # retry joins too, so count rather than take the last two.
    sources = [s for _, s in op.admissions(ns, "ranks")]
    assert sources.count("store") == 2 and sources[-1] == "epoch", sources
