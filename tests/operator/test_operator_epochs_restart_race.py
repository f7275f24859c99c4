"""A StatefulSet recreates ``name-r`` as soon as the old pod object is gone, and the new pod's admission can reach the
operator before the watch event of the old pod's deletion. The pod watch then still holds rank r's pod of the epoch
as live, which alone reads as a retried creation (join the epoch). The admission asks the API server for the pod of
that name: none (or one being deleted) means the watched pod is the old one, so this is a restart and a new epoch
starts; a live pod of that name means a genuine retry (AlreadyExists) and the rank joins. Seen in the two-rank e2e
(tests/e2e/test_e2e_ranks.py): the recreated rank joined its old epoch, the other rank's replacement started a new
one, and the ranks' parts could never meet. Real API server; the stale watch is the LivePods book fed by hand."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from kresume import contract
from kresume.operator import epochbook, epochs
from kresume.operator.kube import Kube
from kresume.operator.resolution import Resolver

TOKEN = "20261202T140000000000Z-abcdef"


def _pod(name: str, rank: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "uid": f"uid-{name}", "annotations": {contract.ANN_EPOCH: TOKEN}},
            "spec": {"containers": [{"name": "trainer", "image": "x",
                                     "env": [{"name": contract.ENV_RANK, "value": str(rank)}]}]},
            "status": {"phase": "Running"}}


def _decide(kube: Kube, namespace: str, name: str, live: epochbook.LivePods, tmp_path) -> epochbook.Admitted:
    started = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    current = epochs.Epoch(TOKEN, None, 2, started, (0, 1))  # both ranks admitted, nothing committed yet

    async def go() -> epochbook.Admitted:
        confirm = epochbook._pod_gone(kube, namespace, name, time.monotonic() + 5)
        return await epochbook._decide(Resolver(), live, namespace, "run", (tmp_path / "store").as_uri(), {}, 0, 2,
                                       60.0, 5.0, None, current, confirm=confirm)

    return asyncio.run(go())


def test_a_recreated_rank_whose_old_pod_the_watch_still_holds_starts_a_new_epoch(control_plane, k8s_namespace,
                                                                                 tmp_path):
    live = epochbook.LivePods()
    live.observed(_pod("train-0", 0), deleted=False)  # the watch has not handled the old train-0's deletion yet
    assert live.rank_pod(TOKEN, 0) == epochs.LIVE
    admitted = _decide(Kube(control_plane.api_client()), k8s_namespace, "train-0", live, tmp_path)
    assert not admitted.joined and admitted.epoch.token != TOKEN  # no train-0 at the API server: a restart


def test_a_retried_creation_while_the_first_pod_exists_joins(control_plane, k8s_namespace, tmp_path):
    control_plane.kubectl("-n", k8s_namespace, "run", "train-0", "--image=x", "--restart=Never")
    live = epochbook.LivePods()
    live.observed(_pod("train-0", 0), deleted=False)
    admitted = _decide(Kube(control_plane.api_client()), k8s_namespace, "train-0", live, tmp_path)
    assert admitted.joined and admitted.epoch.token == TOKEN  # the first pod exists: AlreadyExists, a retry


def test_a_pod_without_a_name_keeps_the_watchs_answer(tmp_path):
    assert epochbook._pod_gone(object(), "ns", None, time.monotonic() + 1) is None
