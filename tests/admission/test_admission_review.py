"""kresume's own ``inject-pod`` answer (``operator/review.py``) against kopf's, on the golden pods.

The operator answers ``/inject-pod`` without kopf's admission machinery (``operator/webhook.py``); the answer
must stay what kopf gave: the same ``uid``/``allowed``/``warnings`` and byte-for-byte the same JSON patch. The
reference here is kopf 1.45 itself: its ``Patch`` with kresume's ``replace_body`` function (what the kopf
handler hands it) and its ``build_response``. Which reviews kresume answers itself: :func:`review.handles`,
against the label/operation/resource filter of the kopf handler it replaces.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from kopf._cogs.structs.bodies import Body
from kopf._cogs.structs.patches import Patch
from kopf._core.engines.admission import build_response

from _fixtures.operator import review as make_review
from injection.test_injection_golden import CASES, DATA, MODES, load, run_case
from kresume import contract
from kresume.injection import replace_body
from kresume.operator import review

PARAMS = [(c, m) for c in CASES for m in MODES]


def kopf_answer(rev: dict, pod: dict, mutated: dict | None, warnings: list[str]) -> dict:
    """What kopf answered for the same admission: its Patch of kresume's replace_body, its build_response."""
    patch = Patch(body=Body(copy.deepcopy(pod)))
    if mutated is not None:
        patch.fns.append(replace_body(mutated))
    return build_response(request=rev, outcomes={}, warnings=list(warnings), jsonpatch=patch.as_json_patch())


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_answer_is_kopfs_on_every_golden_pod(case, mode):
    pod = load(DATA / f"{case}.yaml")
    rev = make_review(pod, pod["metadata"]["namespace"], uid=str(uuid.uuid4()))
    mutated, warnings = run_case(case, mode, pod)
    ours = review.response(rev, pod, mutated, list(warnings))
    assert ours == kopf_answer(rev, pod, mutated, list(warnings))
    assert ours["response"]["allowed"] is True


@pytest.mark.parametrize("case", ["job-pod", "user-env-override"])
def test_unchanged_and_reinjected_pods_get_no_patch_as_with_kopf(case):
    pod = load(DATA / f"{case}.yaml")
    rev = make_review(pod, "default")
    unchanged = review.response(rev, pod, None, ["kresume: no CheckpointPolicy"])
    assert unchanged == kopf_answer(rev, pod, None, ["kresume: no CheckpointPolicy"])
    assert "patch" not in unchanged["response"] and unchanged["response"]["warnings"] == ["kresume: no CheckpointPolicy"]
    once, _ = run_case(case, "native", pod)
    again = review.response(make_review(once, "default"), once, copy.deepcopy(once), [])
    assert "patch" not in again["response"] and "warnings" not in again["response"]


def opted_in(**request: object) -> dict:
    pod = {"metadata": {"generateName": "t-", "labels": {contract.LABEL_INJECT: "true"}},
           "spec": {"containers": [{"name": "trainer", "image": "x"}]}}
    rev = make_review(pod, "default")
    rev["request"].update(request)
    return rev


def test_handles_what_the_kopf_handler_would_run_for():
    assert review.handles(opted_in())
    assert review.handles(opted_in(dryRun=True))
    assert not review.handles(opted_in(operation="UPDATE"))
    assert not review.handles(opted_in(operation="DELETE", object=None))
    assert not review.handles(opted_in(subResource="ephemeralcontainers"))
    assert not review.handles(opted_in(resource={"group": "apps", "version": "v1", "resource": "deployments"}))
    assert not review.handles(opted_in(userInfo=None))  # kopf answers HTTP 400 (missing user info)
    assert not review.handles(opted_in(object=None))
    off = opted_in()
    off["request"]["object"]["metadata"]["labels"][contract.LABEL_INJECT] = "false"
    assert not review.handles(off)
    del off["request"]["object"]["metadata"]["labels"]
    assert not review.handles(off)
    assert not review.handles({"kind": "AdmissionReview"})


def test_the_server_answers_inject_pod_itself_and_leaves_the_rest_to_kopf():
    """The real aiohttp server of kopf's WebhookServer (plain HTTP on loopback): an opted-in CREATE at
    /inject-pod reaches kresume's route (with its namespace filled in); another path, an UPDATE and a body that
    is not JSON reach kopf's function or its HTTP 400, as before."""
    import asyncio
    import json as jsonlib

    import aiohttp

    from kresume.operator.webhook import WebhookServer

    ours: list[dict] = []
    kopfs: list[tuple[dict, str | None]] = []

    async def route(rev: dict) -> dict:
        ours.append(rev)
        return review.response(rev, rev["request"]["object"], None, ["from kresume"])

    async def kopf_fn(rev: dict, *, webhook: str | None = None, **_: object) -> dict:
        kopfs.append((rev, webhook))
        return {"response": {"uid": rev["request"]["uid"], "allowed": True, "warnings": ["from kopf"]}}

    async def scenario() -> None:
        server = WebhookServer(addr="127.0.0.1", insecure=True)
        server.route("inject-pod", route)
        serving = server(kopf_fn)
        config = await serving.__anext__()
        url = config["url"].rstrip("/")
        try:
            async with aiohttp.ClientSession() as http:
                async def post(path: str, body: bytes) -> tuple[int, dict | None]:
                    async with http.post(f"{url}/{path}", data=body, headers={"Content-Type": "application/json"}) as r:
                        return r.status, (await r.json() if r.status == 200 else None)

                status, answer = await post("inject-pod", jsonlib.dumps(opted_in()).encode())
                assert (status, answer["response"]["warnings"]) == (200, ["from kresume"])
                assert ours[-1]["request"]["object"]["metadata"]["namespace"] == "default"
                status, answer = await post("inject-pod", jsonlib.dumps(opted_in(operation="UPDATE")).encode())
                assert (status, answer["response"]["warnings"]) == (200, ["from kopf"])
                assert kopfs[-1][1] == "inject-pod"
                status, answer = await post("other", jsonlib.dumps(opted_in()).encode())
                assert (status, answer["response"]["warnings"]) == (200, ["from kopf"])
                status, _ = await post("inject-pod", b"{not json")
                assert status == 400
        finally:
            await serving.aclose()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert len(ours) == 1 and len(kopfs) == 2
