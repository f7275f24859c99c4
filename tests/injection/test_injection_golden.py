"""Golden files: every input pod in testdata/, injected in both sidecar modes (Istio inject_test style).

``testdata/<case>.yaml`` is the input; ``<case>.native.yaml`` and ``<case>.legacy.yaml`` are the
expected outputs: warnings as leading ``# warning:`` lines, then the pod. Run with
``REFRESH_GOLDEN=1`` to rewrite them after an intended change (and review the diff). Every output
validates against the Kubernetes 1.31 OpenAPI schema (strict: unknown fields fail).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kresume import contract
from kresume.identity import IdentityError, OwnerFacts, ranks, run_identity
from kresume.injection import RankEnv, Resume, inject, json_patch, replace_body
from kresume.policy import Policy, run_url

DATA = Path(__file__).parent / "testdata"
IMAGE = "ghcr.io/kresume/kresume:0.1.0"
K8S_VERSION = "1.31"
MODES = ("native", "legacy")
BASE_POLICY = {"storage": "s3://ckpts/kresume"}
FULL_POLICY = {
    "storage": "gs://team-bucket/ckpt",
    "storageOptions": {"endpoint_url": "http://fake-gcs:4443", "token": "anon"},
    "credentialsSecret": "gcs-credentials",
    "retention": {"keepLast": 3, "keepEvery": 1000},
    "sidecar": {
        "image": "registry.local/kresume:dev",
        "imagePullPolicy": "Always",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "concurrency": 8,
        "extraArgs": ["--skip-superseded"],
        "extraEnv": [{"name": "KRESUME_LOG_LEVEL", "value": "debug"}],
    },
}

NODE_CACHE_POLICY = {"storage": "s3://ckpts/kresume", "nodeCache": {"enabled": True, "maxBytes": 10 * 2**30}}

# case -> (policy spec, has a committed checkpoint)
CASES: dict[str, tuple[dict, bool]] = {
    "job-pod": (BASE_POLICY, True),
    "indexed-job-pod": (BASE_POLICY, True),
    "jobset-pod": (BASE_POLICY, False),
    "statefulset-pod": (BASE_POLICY, True),
    "pytorchjob-pod": (BASE_POLICY, True),
    "bare-pod-run-annotation": (BASE_POLICY, False),
    "bare-pod-no-run": (BASE_POLICY, True),
    "existing-volume": (BASE_POLICY, True),
    "parent-volume": (BASE_POLICY, True),
    "annotated-volume": (BASE_POLICY, False),
    "two-containers-selected": (BASE_POLICY, True),
    "two-containers-default": (BASE_POLICY, True),
    "restore": (BASE_POLICY, True),
    "restore-no-checkpoint": (BASE_POLICY, False),
    "user-env-override": (BASE_POLICY, True),
    "policy-full": (FULL_POLICY, True),
    "root-trainer": (BASE_POLICY, False),
    "restricted-pod": (BASE_POLICY, True),
    "pytorchjob-old-labels-pod": (BASE_POLICY, True),
    "parallel-job-pod": (BASE_POLICY, True),
    "annotated-ranks-pod": (BASE_POLICY, True),
    "node-cache": (NODE_CACHE_POLICY, True),
}
#: The controller facts the operator reads through the API for a case (identity.ranks needs them).
FACTS: dict[str, OwnerFacts] = {
    "job-pod": OwnerFacts("Job", "train", completions=1, parallelism=1),
    "node-cache": OwnerFacts("Job", "train", completions=1, parallelism=1),
    "indexed-job-pod": OwnerFacts("Job", "ddp", completions=4, parallelism=4, indexed=True),
    "jobset-pod": OwnerFacts("Job", "llm-workers-1", completions=2, parallelism=2, indexed=True),
    "statefulset-pod": OwnerFacts("StatefulSet", "web", replicas=2),
    "parallel-job-pod": OwnerFacts("Job", "sweep", completions=6, parallelism=3),
}
EPOCH = "20261129T103000123456Z-e90c41"  # a fixed resume epoch token


def resume_for(url: str) -> Resume:
    name, cid = "epoch=3-step=400.ckpt", "0000000400-20261129T103000123456Z-9f2c1a"  # store id format
    return Resume(url=f"{url}checkpoints/{cid}/{name}", checkpoint=cid, name=name, step=400)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def run_case(case: str, mode: str, pod: dict | None = None) -> tuple[dict, tuple[str, ...]]:
    """What the webhook does, minus I/O: identity, then inject (or admit unchanged)."""
    spec, has_ckpt = CASES[case]
    pod = load(DATA / f"{case}.yaml") if pod is None else pod
    namespace = pod["metadata"]["namespace"]
    identity = run_identity(pod)
    if isinstance(identity, IdentityError):
        return copy.deepcopy(pod), (f"{identity.reason}: {identity.message}",)
    place = ranks(pod, identity, FACTS.get(case))
    if isinstance(place, IdentityError):
        return copy.deepcopy(pod), (f"{place.reason}: {place.message}",)
    rank_env = RankEnv(place.rank, place.world_size, EPOCH) if place is not None and place.world_size > 1 else None
    policy = Policy.from_spec(spec)
    resume = resume_for(run_url(policy, namespace, identity.run)) if has_ckpt else None
    result = inject(pod, policy, resume, run=identity.run, namespace=namespace, native_sidecar=mode == "native",
                    image=IMAGE, ranks=rank_env)
    return result.pod, result.warnings


def render(pod: dict, warnings: tuple[str, ...]) -> str:
    head = "".join(f"# warning: {w}\n" for w in warnings)
    return head + yaml.safe_dump(pod, sort_keys=False, width=100)


PARAMS = [(c, m) for c in CASES for m in MODES]


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_injection_golden(case, mode):
    pod_in = load(DATA / f"{case}.yaml")
    before = copy.deepcopy(pod_in)
    pod, warnings = run_case(case, mode, pod_in)
    assert pod_in == before, "inject modified its input"
    text = render(pod, warnings)
    golden = DATA / f"{case}.{mode}.yaml"
    if os.environ.get("REFRESH_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"missing {golden.name}; run with REFRESH_GOLDEN=1"
    assert text == golden.read_text(), f"{golden.name} differs; review, then REFRESH_GOLDEN=1"


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_injection_idempotent(case, mode):
    once, first_warnings = run_case(case, mode)
    twice, warnings = run_case(case, mode, copy.deepcopy(once))
    assert twice == once
    assert json_patch(once, twice) == []
    if case not in ("bare-pod-no-run", "parallel-job-pod"):
        assert warnings == ()
        # Structural idempotency too: without the marker, re-injecting changes nothing and warns
        # only about real user overrides (our own env entries are identical, not overrides).
        unmarked = copy.deepcopy(once)
        del unmarked["metadata"]["annotations"][contract.ANN_INJECTED]
        again, warnings = run_case(case, mode, unmarked)
        assert again == once
        assert warnings == first_warnings


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_injection_output_validates(case, mode):
    pod, _ = run_case(case, mode)
    assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True) == K8S_VERSION


@pytest.mark.parametrize("case", list(CASES))
def test_injection_inputs_validate(case):
    kubernetes_validate.validate(load(DATA / f"{case}.yaml"), K8S_VERSION, strict=True)


def test_injection_schema_validation_can_fail():
    """The validator is live: an unknown container field and a wrong type are rejected."""
    pod, _ = run_case("job-pod", "native")
    bad = copy.deepcopy(pod)
    bad["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(pod)
    bad["spec"]["containers"][0]["env"][0]["value"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_injection_no_stale_goldens():
    """Every file in testdata/ belongs to a case (Istio fails on unused golden files too)."""
    expected = {f"{c}.yaml" for c in CASES} | {f"{c}.{m}.yaml" for c in CASES for m in MODES}
    present = {p.name for p in DATA.iterdir()}
    assert present - expected == set(), "stale files in testdata/: delete them or add a case"
    assert expected - present == set(), "missing files; run with REFRESH_GOLDEN=1"


@pytest.mark.parametrize("case, mode", PARAMS, ids=[f"{c}-{m}" for c, m in PARAMS])
def test_injection_patch_reproduces_output(case, mode):
    """The JSON patch and the kopf patch function both turn the input into the output."""
    import jsonpatch

    pod_in = load(DATA / f"{case}.yaml")
    pod, _ = run_case(case, mode)
    ops = json_patch(pod_in, pod)
    assert jsonpatch.apply_patch(pod_in, ops) == pod
    body = copy.deepcopy(pod_in)
    replace_body(pod)(body)
    assert body == pod
    assert (ops == []) == (case in ("bare-pod-no-run", "parallel-job-pod"))
