"""``webhook.fill_namespace``: the request's namespace reaches the pod kopf hands the handler (pure)."""

from __future__ import annotations

from _fixtures.operator import review
from kresume.operator.webhook import fill_namespace


def pod(**meta: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "train-", **meta},
            "spec": {"containers": [{"name": "trainer", "image": "x"}]}}


def test_namespace_comes_from_the_request_when_the_object_has_none():
    rev = review(pod(), "team-b")
    assert "namespace" not in rev["request"]["object"]["metadata"]
    assert fill_namespace(rev)["request"]["object"]["metadata"]["namespace"] == "team-b"


def test_a_namespace_the_object_carries_is_kept():
    rev = review(pod(namespace="team-a"), "team-b")
    assert fill_namespace(rev)["request"]["object"]["metadata"]["namespace"] == "team-a"


def test_reviews_without_an_object_pass_through():
    rev = {"request": {"namespace": "team-b", "object": None}}
    assert fill_namespace(rev) == {"request": {"namespace": "team-b", "object": None}}
