"""run_identity over every owner kind, with the unsafe values each rule must refuse."""

from __future__ import annotations

import copy

import pytest

from kresume.identity import IdentityError, RunIdentity, run_identity


def pod(labels=None, annotations=None, owners=None, name=None, generate_name=None):
    meta: dict = {"namespace": "team-a"}
    if name:
        meta["name"] = name
    if generate_name:
        meta["generateName"] = generate_name
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owners:
        meta["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}


def owner(kind, name, controller=True, api="batch/v1"):
    return {"apiVersion": api, "kind": kind, "name": name, "uid": "u-" + name, "controller": controller}


CI = "batch.kubernetes.io/job-completion-index"
JS = {
    "jobset.sigs.k8s.io/jobset-name": "llm",
    "jobset.sigs.k8s.io/replicatedjob-name": "workers",
    "jobset.sigs.k8s.io/job-index": "1",
    "batch.kubernetes.io/job-name": "llm-workers-1",
}
KF = {
    "training.kubeflow.org/job-name": "bert",
    "training.kubeflow.org/replica-type": "worker",
    "training.kubeflow.org/replica-index": "3",
}

OK = [
    # id, pod, expected RunIdentity
    ("annotation", pod(annotations={"kresume.dev/run": "my-run"}), RunIdentity("my-run", "annotation")),
    ("annotation-dots", pod(annotations={"kresume.dev/run": "exp.v2.run-1"}), RunIdentity("exp.v2.run-1", "annotation")),
    (
        "annotation-beats-job",
        pod(labels={"job-name": "train"}, annotations={"kresume.dev/run": "explicit"}),
        RunIdentity("explicit", "annotation"),
    ),
    ("job-label", pod(labels={"batch.kubernetes.io/job-name": "train"}, generate_name="train-"), RunIdentity("train", "job", "train")),
    ("job-legacy-label", pod(labels={"job-name": "train"}), RunIdentity("train", "job", "train")),
    ("job-owner-only", pod(owners=[owner("Job", "train")]), RunIdentity("train", "job", "train")),
    (
        "job-owner-controller-preferred",
        pod(owners=[owner("Job", "other", controller=False), owner("Job", "train")]),
        RunIdentity("train", "job", "train"),
    ),
    (
        "indexed-job-annotation",
        pod(labels={"job-name": "train"}, annotations={CI: "2"}),
        RunIdentity("train-2", "job", "train", 2),
    ),
    (
        "indexed-job-label",
        pod(labels={"batch.kubernetes.io/job-name": "train", CI: "0"}),
        RunIdentity("train-0", "job", "train", 0),
    ),
    (
        "indexed-job-annotation-wins-over-label",
        pod(labels={"job-name": "train", CI: "7"}, annotations={CI: "7"}),
        RunIdentity("train-7", "job", "train", 7),
    ),
    ("jobset", pod(labels={**JS, CI: "4"}, annotations={CI: "4"}), RunIdentity("llm-workers-1-4", "jobset", "llm", 4)),
    ("jobset-non-indexed", pod(labels=JS), RunIdentity("llm-workers-1", "jobset", "llm", None)),
    ("pytorchjob", pod(labels=KF, owners=[owner("PyTorchJob", "bert", api="kubeflow.org/v1")]), RunIdentity("bert-worker-3", "pytorchjob", "bert", 3)),
    (
        "pytorchjob-master-upper",
        pod(labels={**KF, "training.kubeflow.org/replica-type": "Master", "training.kubeflow.org/replica-index": "0"}),
        RunIdentity("bert-master-0", "pytorchjob", "bert", 0),
    ),
    ("statefulset", pod(name="web-0", owners=[owner("StatefulSet", "web", api="apps/v1")]), RunIdentity("web-0", "statefulset", "web", 0)),
    (
        "statefulset-name-from-label",
        pod(labels={"statefulset.kubernetes.io/pod-name": "web-12"}, owners=[owner("StatefulSet", "web", api="apps/v1")]),
        RunIdentity("web-12", "statefulset", "web", 12),
    ),
]


@pytest.mark.parametrize("case, body, expected", OK, ids=[c[0] for c in OK])
def test_identity_derived(case, body, expected):
    before = copy.deepcopy(body)
    assert run_identity(body) == expected
    assert body == before  # pure: the input is not touched


BAD = [
    # id, pod, reason, words the message must contain
    ("bare-pod", pod(generate_name="x-"), "NoRun", ["no run", "kresume.dev/run"]),
    ("deployment-pod", pod(owners=[owner("ReplicaSet", "web-6d4f", api="apps/v1")]), "NoRun", ["no run"]),
    ("empty-annotation", pod(annotations={"kresume.dev/run": ""}), "InvalidRun", ["empty"]),
    ("slash", pod(annotations={"kresume.dev/run": "a/b"}), "InvalidRun", ["kresume.dev/run", "'/'"]),
    ("dotdot", pod(annotations={"kresume.dev/run": ".."}), "InvalidRun", ["'..'"]),
    ("dotdot-inside", pod(annotations={"kresume.dev/run": "a..b"}), "InvalidRun", ["not a valid run name"]),
    ("scheme", pod(annotations={"kresume.dev/run": "s3://other/bucket"}), "InvalidRun", ["not a valid run name"]),
    ("upper", pod(annotations={"kresume.dev/run": "MyRun"}), "InvalidRun", ["lower-case"]),
    ("space", pod(annotations={"kresume.dev/run": "my run"}), "InvalidRun", ["not a valid run name"]),
    ("leading-dash", pod(annotations={"kresume.dev/run": "-run"}), "InvalidRun", ["not a valid run name"]),
    ("too-long", pod(annotations={"kresume.dev/run": "a" * 254}), "InvalidRun", ["254 characters", "253"]),
    ("bad-index", pod(labels={"job-name": "t"}, annotations={CI: "1; rm"}), "InvalidRun", [CI]),
    ("negative-index", pod(labels={"job-name": "t"}, annotations={CI: "-1"}), "InvalidRun", [CI]),
    ("jobset-no-rjob", pod(labels={"jobset.sigs.k8s.io/jobset-name": "llm"}), "InvalidRun", ["replicatedjob-name"]),
    (
        "jobset-no-job-index",
        pod(labels={"jobset.sigs.k8s.io/jobset-name": "llm", "jobset.sigs.k8s.io/replicatedjob-name": "w"}),
        "InvalidRun",
        ["job-index"],
    ),
    ("pytorchjob-no-index", pod(labels={"training.kubeflow.org/job-name": "b", "training.kubeflow.org/replica-type": "worker"}), "InvalidRun", ["replica-index"]),
    ("job-name-unsafe", pod(labels={"job-name": "../x"}), "InvalidRun", ["Job name"]),
    ("statefulset-no-name", pod(generate_name="web-", owners=[owner("StatefulSet", "web", api="apps/v1")]), "InvalidRun", ["without a name"]),
]


@pytest.mark.parametrize("case, body, reason, words", BAD, ids=[c[0] for c in BAD])
def test_identity_refused(case, body, reason, words):
    result = run_identity(body)
    assert isinstance(result, IdentityError), result
    assert result.reason == reason
    for word in words:
        assert word in result.message, (word, result.message)


def test_identity_tolerates_missing_metadata():
    assert isinstance(run_identity({}), IdentityError)
    assert isinstance(run_identity({"metadata": None}), IdentityError)
