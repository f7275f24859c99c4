"""run_identity and ranks over every controller shape (golden tables), with the values each rule must refuse.

Each row is a pod as the controller creates it (labels, annotations, owners, env) plus the facts of its
controller the operator reads through the API, and the expected (run, source, rank, world size) — or the reason
kresume stays out.
"""

from __future__ import annotations

import copy

import pytest

from kresume.identity import IdentityError, OwnerFacts, Ranks, RunIdentity, ranks, run_identity


def pod(labels=None, annotations=None, owners=None, name=None, generate_name=None, env=None):
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
    container = {"name": "trainer", "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [container]}}


def owner(kind, name, controller=True, api="batch/v1"):
    return {"apiVersion": api, "kind": kind, "name": name, "uid": "u-" + name, "controller": controller}


CI = "batch.kubernetes.io/job-completion-index"
JOB = {"batch.kubernetes.io/job-name": "train", "job-name": "train"}
JS = {"jobset.sigs.k8s.io/jobset-name": "llm", "jobset.sigs.k8s.io/replicatedjob-name": "workers",
      "jobset.sigs.k8s.io/job-index": "1", "jobset.sigs.k8s.io/job-global-index": "3",
      "jobset.sigs.k8s.io/replicatedjob-replicas": "2", "jobset.sigs.k8s.io/global-replicas": "4",
      "batch.kubernetes.io/job-name": "llm-workers-1"}
KF = {"training.kubeflow.org/job-name": "bert", "training.kubeflow.org/replica-type": "worker",
      "training.kubeflow.org/replica-index": "2"}
KF_OLD = {"group-name": "kubeflow.org", "job-name": "bert", "replica-type": "worker", "replica-index": "2"}
STS = [owner("StatefulSet", "web", api="apps/v1")]
JOB_1 = OwnerFacts("Job", "train", completions=1, parallelism=1)
JOB_IDX = OwnerFacts("Job", "train", completions=4, parallelism=4, indexed=True)
JOB_PAR = OwnerFacts("Job", "train", completions=6, parallelism=3)
JS_JOB = OwnerFacts("Job", "llm-workers-1", completions=2, parallelism=2, indexed=True)

# id, pod, owner facts, (run, source, group), (rank, world) or None for a single writer
TABLE = [
    ("annotation", pod(annotations={"kresume.dev/run": "my-run"}), None, ("my-run", "annotation", None), None),
    ("annotation-dots", pod(annotations={"kresume.dev/run": "exp.v2.run-1"}), None,
     ("exp.v2.run-1", "annotation", None), None),
    ("annotation-with-ranks", pod(annotations={"kresume.dev/run": "fsdp", "kresume.dev/rank": "1",
                                               "kresume.dev/world-size": "2"}), None, ("fsdp", "annotation", None),
     (1, 2)),
    ("annotation-beats-job-name-but-keeps-the-index", pod(labels=JOB, annotations={"kresume.dev/run": "x", CI: "2"},
                                                          owners=[owner("Job", "train")]), JOB_IDX,
     ("x", "annotation", None), (2, 4)),
    ("job", pod(labels=JOB, generate_name="train-", owners=[owner("Job", "train")]), JOB_1,
     ("train", "job", "train"), None),
    ("job-legacy-label", pod(labels={"job-name": "train"}), JOB_1, ("train", "job", "train"), None),
    ("job-owner-only", pod(owners=[owner("Job", "train")]), JOB_1, ("train", "job", "train"), None),
    ("job-owner-controller-preferred", pod(owners=[owner("Job", "other", controller=False), owner("Job", "train")]),
     JOB_1, ("train", "job", "train"), None),
    ("indexed-job-annotation", pod(labels=JOB, annotations={CI: "2"}), JOB_IDX, ("train", "job", "train"), (2, 4)),
    ("indexed-job-label", pod(labels={**JOB, CI: "0"}), JOB_IDX, ("train", "job", "train"), (0, 4)),
    ("indexed-job-of-one", pod(labels=JOB, annotations={CI: "0"}),
     OwnerFacts("Job", "train", completions=1, parallelism=1, indexed=True), ("train", "job", "train"), (0, 1)),
    ("jobset-global", pod(labels={**JS, CI: "1"}, annotations={CI: "1"}), JS_JOB, ("llm", "jobset", "llm"), (7, 8)),
    ("jobset-without-global-labels", pod(labels={k: v for k, v in JS.items() if "global" not in k} | {CI: "0"}),
     JS_JOB, ("llm", "jobset", "llm"), (2, 4)),
    ("pytorchjob-env", pod(labels=KF, env={"RANK": "3", "WORLD_SIZE": "4"}), None, ("bert", "pytorchjob", "bert"),
     (3, 4)),
    ("pytorchjob-elastic-env", pod(labels=KF, env={"PET_NODE_RANK": "1", "PET_NNODES": "2"}), None,
     ("bert", "pytorchjob", "bert"), (1, 2)),
    ("pytorchjob-old-labels", pod(labels=KF_OLD, env={"RANK": "3", "WORLD_SIZE": "4"}), None,
     ("bert", "pytorchjob", "bert"), (3, 4)),
    ("statefulset", pod(name="web-1", owners=STS), OwnerFacts("StatefulSet", "web", replicas=2),
     ("web", "statefulset", "web"), (1, 2)),
    ("statefulset-name-from-label", pod(labels={"statefulset.kubernetes.io/pod-name": "web-12"}, owners=STS),
     OwnerFacts("StatefulSet", "web", replicas=16), ("web", "statefulset", "web"), (12, 16)),
    ("statefulset-of-one", pod(name="web-0", owners=STS), OwnerFacts("StatefulSet", "web", replicas=1),
     ("web", "statefulset", "web"), (0, 1)),
]


@pytest.mark.parametrize("case, body, facts, named, place", TABLE, ids=[c[0] for c in TABLE])
def test_identity_table(case, body, facts, named, place):
    before = copy.deepcopy(body)
    ident = run_identity(body)
    assert isinstance(ident, RunIdentity), ident
    assert (ident.run, ident.source, ident.group) == named
    got = ranks(body, ident, facts)
    assert not isinstance(got, IdentityError), got
    assert (None if got is None else (got.rank, got.world_size)) == place
    assert body == before  # pure: the input is not touched


BAD = [
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
    ("job-name-unsafe", pod(labels={"job-name": "../x"}), "InvalidRun", ["Job name"]),
    ("jobset-name-unsafe", pod(labels={"jobset.sigs.k8s.io/jobset-name": "LLM"}), "InvalidRun", ["JobSet name"]),
]


@pytest.mark.parametrize("case, body, reason, words", BAD, ids=[c[0] for c in BAD])
def test_identity_refused(case, body, reason, words):
    result = run_identity(body)
    assert isinstance(result, IdentityError), result
    assert result.reason == reason
    for word in words:
        assert word in result.message, (word, result.message)


NO_RANK = [
    # id, pod, facts, reason, words
    ("parallel-non-indexed-job", pod(labels=JOB), JOB_PAR, "NoRank", ["parallelism 3", "completionMode: Indexed"]),
    ("indexed-job-unreadable", pod(labels=JOB, annotations={CI: "1"}), None, "NoRank", ["could not be read"]),
    ("statefulset-unreadable", pod(name="web-0", owners=STS), None, "NoRank", ["could not be read"]),
    ("statefulset-without-ordinal", pod(name="web", owners=STS), OwnerFacts("StatefulSet", "web", replicas=2),
     "NoRank", ["no ordinal"]),
    ("pytorchjob-without-env", pod(labels=KF), None, "NoRank", ["RANK/WORLD_SIZE"]),
    ("jobset-without-job-facts", pod(labels=JS), None, "NoRank", ["parallelism is unknown"]),
    ("rank-without-world", pod(annotations={"kresume.dev/run": "r", "kresume.dev/rank": "1"}), None, "InvalidRank",
     ["together"]),
    ("rank-past-world", pod(annotations={"kresume.dev/run": "r", "kresume.dev/rank": "2",
                                         "kresume.dev/world-size": "2"}), None, "InvalidRank", ["0 <= rank"]),
    ("rank-not-a-number", pod(annotations={"kresume.dev/run": "r", "kresume.dev/rank": "one",
                                           "kresume.dev/world-size": "2"}), None, "InvalidRank", ["kresume.dev/rank"]),
    ("bad-completion-index", pod(labels=JOB, annotations={CI: "1; rm"}), JOB_IDX, "InvalidRank", [CI]),
]


@pytest.mark.parametrize("case, body, facts, reason, words", NO_RANK, ids=[c[0] for c in NO_RANK])
def test_rank_cannot_be_known(case, body, facts, reason, words):
    ident = run_identity(body)
    assert isinstance(ident, RunIdentity), ident
    got = ranks(body, ident, facts)
    assert isinstance(got, IdentityError) and got.reason == reason, got
    for word in words:
        assert word in got.message, (word, got.message)
    assert "admitted without kresume" in got.message


def test_owner_facts_from_api_objects():
    job = {"kind": "Job", "metadata": {"name": "t"}, "spec": {"completions": 4, "parallelism": 4,
                                                              "completionMode": "Indexed"}}
    assert OwnerFacts.from_object(job) == OwnerFacts("Job", "t", completions=4, parallelism=4, indexed=True)
    assert OwnerFacts.from_object({"kind": "Job", "metadata": {"name": "t"}, "spec": {}}) == \
        OwnerFacts("Job", "t", completions=None, parallelism=1)
    assert OwnerFacts.from_object({"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"replicas": 3}}) == \
        OwnerFacts("StatefulSet", "s", replicas=3)
    assert OwnerFacts.from_object({"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {}}).replicas == 1
    assert Ranks(0, 2, "statefulset").world_size == 2


def test_identity_tolerates_missing_metadata():
    assert isinstance(run_identity({}), IdentityError)
    assert isinstance(run_identity({"metadata": None}), IdentityError)
