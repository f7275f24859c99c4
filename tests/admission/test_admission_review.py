"""AdmissionReview dicts through kopf's own ``serve_admission_request`` (kopf's admission test style).

No HTTP and no cluster: a fresh kopf registry with kresume's handlers, policies on ``memory://`` or
``file://``, and a real ``RunStore`` commit of a small ``torch.save`` file. Indices are plain dicts
of lists, the shape kopf's ``Index`` has.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonpatch
import kopf
import pytest
from kopf._cogs.structs import references
from kopf._core.engines.admission import serve_admission_request
from kopf._core.reactor.inventory import ResourceMemories

from kresume import contract
from kresume.operator import admission, handlers
from kresume.operator.notes import Notes
from kresume.operator.resolution import Resolver
from kresume.operator.settings import OperatorConfig, ResolutionSettings
from kresume.operator.webhook import fill_namespace
from kresume.store.runstore import RunStore

PODS = references.Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True,
                           verbs=["create", "get", "list", "watch"])


class FakeApi:
    """The two reads admission makes; records them (a policy missing from the index is read)."""

    def __init__(self, policies: dict[tuple[str, str], dict[str, Any]] | None = None,
                 secrets: dict[tuple[str, str], dict[str, str]] | None = None) -> None:
        self.policies = policies or {}
        self.secrets = secrets or {}
        self.calls: list[tuple[str, str, str]] = []

    async def policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("policy", namespace, name))
        spec = self.policies.get((namespace, name))
        return {"spec": spec} if spec is not None else None

    async def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append(("secret", namespace, name))
        return self.secrets.get((namespace, name))


def job_pod(job: str = "train", **annotations: str) -> dict[str, Any]:
    """A pod as the Job controller sends it at CREATE: generateName, no name, no namespace."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": f"{job}-",
            "labels": {contract.LABEL_INJECT: "true", "job-name": job, "controller-uid": "u-1"},
            "annotations": dict(annotations),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "u-1",
                                 "controller": True}],
        },
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "trainer", "image": "python:3.11", "command": ["python", "train.py"]}]},
    }


def review(pod: dict[str, Any], namespace: str = "team-a", uid: str = "r-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
            "object": pod, "oldObject": None, "dryRun": False,
        },
    }


def make_state(api: FakeApi, *, timeout: float = 2.0, native: bool = False, open_store: Any = RunStore.open) -> admission.State:
    config = OperatorConfig(resolution=ResolutionSettings(timeout=timeout))
    return admission.State(config=config, resolver=Resolver(config.resolution, open_store=open_store), api=api,
                           notes=Notes(), native=native)


async def serve(state: admission.State, rev: dict[str, Any], *, policies: dict | None = None,
                runs: dict | None = None) -> dict[str, Any]:
    registry = handlers.register(kopf.OperatorRegistry(), state.config)
    insights = references.Insights()
    insights.webhook_resources.add(PODS)
    indices = {"kresume_policies": policies or {}, "kresume_runs": runs or {}, "kresume_live_pods": {}}
    return await serve_admission_request(
        fill_namespace(copy.deepcopy(rev)), webhook=handlers.INJECT_ID, settings=kopf.OperatorSettings(),
        memories=ResourceMemories(), memobase=kopf.Memo(kresume=state), registry=registry, insights=insights,
        indices=indices,  # type: ignore[arg-type]
    )


def patched(rev: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The pod the API server would store: the review's object with the response's JSON patch applied."""
    resp = response["response"]
    assert resp["allowed"] is True, resp
    pod = fill_namespace(copy.deepcopy(rev))["request"]["object"]
    if "patch" not in resp:
        return pod
    assert resp["patchType"] == "JSONPatch"
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(resp["patch"])))


def env_of(pod: dict[str, Any], container: str = "trainer") -> dict[str, Any]:
    c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e.get("value") for e in c.get("env", [])}


@pytest.fixture
def ckpt_file(tmp_path: Path) -> Path:
    import torch

    path = tmp_path / "epoch=0-step=7.ckpt"
    torch.save({"w": torch.zeros(4), "global_step": 7}, path)
    return path


@pytest.fixture
def policy_spec(tmp_path: Path) -> dict[str, Any]:
    return {"storage": f"file://{tmp_path}/store"}


def test_fresh_start_gets_sidecar_volume_env_and_annotations(policy_spec):
    api = FakeApi()
    rev = review(job_pod())
    response = asyncio.run(serve(make_state(api), rev, policies={("team-a", "default"): [policy_spec]}))
    pod = patched(rev, response)
    ann = pod["metadata"]["annotations"]
    assert ann[contract.ANN_RESUMED_FROM] == "none"
    assert ann[contract.ANN_INJECTED] == "legacy"
    assert contract.ANN_RESOLVE_ERROR not in ann
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["trainer", contract.SIDECAR_CONTAINER_NAME]
    env = env_of(pod)
    assert env[contract.ENV_RUN_URL] == f"{policy_spec['storage']}/team-a/train/"
    assert contract.ENV_RESUME_FROM not in env
    assert any(v["name"] == contract.VOLUME_NAME for v in pod["spec"]["volumes"])
    assert api.calls == []  # the policy came from the index: no API read on the hot path


def test_committed_checkpoint_is_injected(policy_spec, ckpt_file):
    url = f"{policy_spec['storage']}/team-a/train/"
    manifest = RunStore.open(url).commit(ckpt_file)
    rev = review(job_pod())
    response = asyncio.run(serve(make_state(FakeApi()), rev, policies={("team-a", "default"): [policy_spec]}))
    pod = patched(rev, response)
    env = env_of(pod)
    assert env[contract.ENV_RESUME_FROM] == RunStore.open(url).checkpoint_url(manifest)
    assert env[contract.ENV_RESUME_STEP] == "7"
    assert pod["metadata"]["annotations"][contract.ANN_RESUMED_STEP] == "7"


def test_native_mode_puts_sidecar_in_init_containers(policy_spec):
    rev = review(job_pod())
    response = asyncio.run(serve(make_state(FakeApi(), native=True), rev, policies={("team-a", "default"): [policy_spec]}))
    pod = patched(rev, response)
    init = pod["spec"]["initContainers"]
    assert [c["name"] for c in init] == [contract.SIDECAR_CONTAINER_NAME]
    assert init[0]["restartPolicy"] == "Always"
    assert pod["metadata"]["annotations"][contract.ANN_INJECTED] == "native"


def test_policy_missing_from_index_is_read_from_the_api(policy_spec):
    api = FakeApi(policies={("team-a", "fast"): policy_spec})
    rev = review(job_pod(**{contract.ANN_POLICY: "fast"}))
    pod = patched(rev, asyncio.run(serve(make_state(api), rev)))
    assert contract.ANN_INJECTED in pod["metadata"]["annotations"]
    assert api.calls == [("policy", "team-a", "fast")]


@pytest.mark.parametrize("name", ["other-ns/default", "../default", "Default", "a" * 254])
def test_policy_in_another_namespace_can_never_be_named(policy_spec, name):
    api = FakeApi(policies={("other-ns", "default"): policy_spec})
    state = make_state(api)
    rev = review(job_pod(**{contract.ANN_POLICY: name}))
    response = asyncio.run(serve(state, rev, policies={("other-ns", "default"): [policy_spec]}))
    assert "patch" not in response["response"] and response["response"]["allowed"] is True
    assert api.calls == []
    [note] = state.notes.pop("team-a", "train")
    assert note.reason == "InvalidPolicy"


def test_missing_policy_admits_unchanged_with_a_warning():
    state = make_state(FakeApi())
    rev = review(job_pod())
    response = asyncio.run(serve(state, rev))
    assert response["response"]["allowed"] is True and "patch" not in response["response"]
    assert any("no CheckpointPolicy 'default'" in w for w in response["response"]["warnings"])
    assert [n.reason for n in state.notes.pop("team-a", "train")] == ["PolicyMissing"]


def test_bare_pod_without_run_is_admitted_unchanged(policy_spec):
    pod = job_pod()
    pod["metadata"] = {"name": "lonely", "labels": {contract.LABEL_INJECT: "true"}}
    state = make_state(FakeApi())
    rev = review(pod)
    response = asyncio.run(serve(state, rev, policies={("team-a", "default"): [policy_spec]}))
    assert "patch" not in response["response"] and response["response"]["allowed"] is True
    assert [n.reason for n in state.notes.pop("team-a", "lonely")] == ["NoRun"]


@pytest.mark.parametrize("run", ["../escape", "s3://x", "a/b", "UPPER"])
def test_unsafe_run_names_are_refused(policy_spec, run):
    state = make_state(FakeApi())
    rev = review(job_pod(**{contract.ANN_RUN: run}))
    response = asyncio.run(serve(state, rev, policies={("team-a", "default"): [policy_spec]}))
    assert "patch" not in response["response"] and response["response"]["allowed"] is True


def test_bad_annotation_admits_unchanged(policy_spec):
    state = make_state(FakeApi())
    rev = review(job_pod(**{contract.ANN_CHECKPOINT_DIR: "relative/dir"}))
    response = asyncio.run(serve(state, rev, policies={("team-a", "default"): [policy_spec]}))
    assert "patch" not in response["response"] and response["response"]["allowed"] is True
    assert [n.reason for n in state.notes.pop("team-a", "train")] == ["InvalidAnnotation"]


def test_user_env_wins_and_leaves_a_warning(policy_spec):
    pod = job_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": contract.ENV_CHECKPOINT_DIR, "value": "/mine"}]
    state = make_state(FakeApi())
    rev = review(pod)
    out = patched(rev, asyncio.run(serve(state, rev, policies={("team-a", "default"): [policy_spec]})))
    assert env_of(out)[contract.ENV_CHECKPOINT_DIR] == "/mine"
    assert [n.reason for n in state.notes.pop("team-a", "train")] == ["EnvOverride"]


class SlowStore:
    """A store whose ``latest`` takes ``delay`` seconds (a hung object store)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def latest(self, *, deadline: float | None = None) -> None:
        time.sleep(self.delay)
        return None

    def manifest_ids(self) -> list[str]:
        return []


class BrokenStore:
    def latest(self, *, deadline: float | None = None) -> None:
        raise PermissionError("AccessDenied: the bucket policy refused ListObjectsV2")


def run_obj(url: str) -> dict[str, Any]:
    return {"spec": {"run": "train", "url": url},
            "status": {"latest": {"url": url + "checkpoints/c1/epoch=1-step=50.ckpt", "checkpoint": "c1", "step": 50}}}


def test_timeout_falls_back_to_run_status_and_says_why(policy_spec):
    url = f"{policy_spec['storage']}/team-a/train/"
    state = make_state(FakeApi(), timeout=0.3, open_store=lambda u, o: SlowStore(1.5))
    rev = review(job_pod())
    t0 = time.monotonic()
    response = asyncio.run(serve(state, rev, policies={("team-a", "default"): [policy_spec]},
                                 runs={("team-a", "train"): [run_obj(url)]}))
    took = time.monotonic() - t0
    pod = patched(rev, response)
    ann = pod["metadata"]["annotations"]
    assert ann[contract.ANN_RESUMED_FROM] == url + "checkpoints/c1/epoch=1-step=50.ckpt"
    assert ann[contract.ANN_RESUMED_STEP] == "50"
    assert ann[contract.ANN_RESOLVE_ERROR].startswith("timeout")
    assert env_of(pod)[contract.ENV_RESUME_FROM] == ann[contract.ANN_RESUMED_FROM]
    assert took < 1.4  # the handler did not wait for the slow store (budget 0.3 s, store 1.5 s)
    state.resolver.close()


def test_store_error_without_any_known_value_starts_fresh_with_the_error(policy_spec):
    state = make_state(FakeApi(), open_store=lambda u, o: BrokenStore())
    rev = review(job_pod())
    pod = patched(rev, asyncio.run(serve(state, rev, policies={("team-a", "default"): [policy_spec]})))
    ann = pod["metadata"]["annotations"]
    assert ann[contract.ANN_RESUMED_FROM] == "none"
    assert "AccessDenied" in ann[contract.ANN_RESOLVE_ERROR]


def test_unexpected_failure_never_blocks_the_pod(policy_spec):
    class Exploding(FakeApi):
        async def policy(self, namespace: str, name: str) -> dict[str, Any] | None:
            raise RuntimeError("apiserver on fire")

    state = make_state(Exploding())
    rev = review(job_pod())
    response = asyncio.run(serve(state, rev))
    assert response["response"]["allowed"] is True and "patch" not in response["response"]
    assert [n.reason for n in state.notes.pop("team-a", "train")] == ["InjectFailed"]


def test_reinjecting_an_injected_pod_changes_nothing(policy_spec):
    state = make_state(FakeApi())
    rev = review(job_pod())
    once = patched(rev, asyncio.run(serve(state, rev, policies={("team-a", "default"): [policy_spec]})))
    rev2 = review(once)
    response = asyncio.run(serve(state, rev2, policies={("team-a", "default"): [policy_spec]}))
    assert "patch" not in response["response"]


def test_credentials_secret_becomes_storage_options(tmp_path):
    seen: list[dict[str, Any]] = []

    def open_store(url: str, options: dict[str, Any]) -> Any:
        seen.append(options)
        return SlowStore(0)

    spec = {"storage": "s3://bucket/base", "credentialsSecret": "s3-creds", "storageOptions": {"endpoint_url": "http://x"}}
    api = FakeApi(secrets={("team-a", "s3-creds"): {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}})
    rev = review(job_pod())
    patched(rev, asyncio.run(serve(make_state(api, open_store=open_store), rev,
                                   policies={("team-a", "default"): [spec]})))
    assert seen == [{"key": "AK", "secret": "SK", "endpoint_url": "http://x"}]


def test_handler_without_index_kwargs_still_injects(policy_spec):
    """kopf 1.45 does not pass indices to admission handlers when serving over HTTP: the handler must
    work from the API alone (a signature needing them would raise inside kopf and DENY the pod)."""
    state = make_state(FakeApi(policies={("team-a", "default"): policy_spec}))
    registry = handlers.register(kopf.OperatorRegistry(), state.config)
    insights = references.Insights()
    insights.webhook_resources.add(PODS)
    rev = review(job_pod())
    response = asyncio.run(serve_admission_request(
        fill_namespace(copy.deepcopy(rev)), webhook=handlers.INJECT_ID, settings=kopf.OperatorSettings(),
        memories=ResourceMemories(), memobase=kopf.Memo(kresume=state), registry=registry, insights=insights,
        indices={},  # type: ignore[arg-type]
    ))
    pod = patched(rev, response)
    assert contract.ANN_INJECTED in pod["metadata"]["annotations"]


def test_namespace_comes_from_the_request_when_the_object_has_none():
    rev = review(job_pod(), namespace="team-b")
    assert "namespace" not in rev["request"]["object"]["metadata"]
    assert fill_namespace(rev)["request"]["object"]["metadata"]["namespace"] == "team-b"


def make_quiet_state(url: str) -> admission.State:
    """A state whose resolver answers quiet runs from memory, with run ``url`` already quiet."""
    from kresume.operator.activity import Activity

    config = OperatorConfig()
    act = Activity()
    act.observed(url, "old-pod", {}, deleted=True)
    return admission.State(config=config, resolver=Resolver(config.resolution, activity=act), api=FakeApi(),
                           notes=Notes())


def test_quiet_run_is_answered_from_memory_until_a_real_admission(policy_spec, ckpt_file):
    url = f"{policy_spec['storage']}/team-a/train/"
    committed = RunStore.open(url).commit(ckpt_file)
    state = make_quiet_state(url)
    policies = {("team-a", "default"): [policy_spec]}
    sources = []
    for dry_run in (True, True, False, False):
        rev = review(job_pod())
        rev["request"]["dryRun"] = dry_run
        pod = patched(rev, asyncio.run(serve(state, rev, policies=policies)))
        assert env_of(pod)[contract.ENV_RESUME_FROM] == RunStore.open(url).checkpoint_url(committed)
        assert env_of(pod)[contract.ENV_RUN_URL] == url  # the key the pod watch reports the run under
        sources.append(state.resolver.cached(url) and state.resolver.exact(url, state.resolver.cached(url), time.monotonic()))
    # dry runs leave the run quiet; the first real admission makes it busy (its pod will run a sidecar).
    assert sources == [True, True, False, False]
