"""CheckpointPolicy spec model and run_url: what is accepted, what is refused and how it says so."""

from __future__ import annotations

import pydantic
import pytest

from kresume.policy import ALLOWED_SCHEMES, Policy, RunNameError, run_url


def test_policy_defaults_and_camel_case_round_trip():
    p = Policy.from_spec({"storage": "s3://bucket/prefix/", "retention": {"keepLast": 3, "keepEvery": 10}})
    assert p.storage == "s3://bucket/prefix"
    assert (p.retention.keep_last, p.retention.keep_every) == (3, 10)
    assert p.restore is False and p.resolve_timeout_seconds == 2.0
    assert p.sidecar.concurrency == 4
    spec = p.to_spec()
    assert spec["retention"] == {"keepLast": 3, "keepEvery": 10}
    assert spec["resolveTimeoutSeconds"] == 2.0
    assert Policy.from_spec(spec) == p


def test_policy_full_spec():
    spec = {
        "storage": "gs://b",
        "storageOptions": {"endpoint_url": "http://127.0.0.1:4443", "token": "anon"},
        "credentialsSecret": "gcs-creds",
        "retention": {"keepLast": 1},
        "sidecar": {
            "image": "ghcr.io/x/kresume:1",
            "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2e9"}},
            "concurrency": 8,
            "graceSeconds": 20,
            "extraArgs": ["--skip-superseded"],
            "extraEnv": [{"name": "FOO", "value": "1"}],
        },
        "restore": True,
        "resolveTimeoutSeconds": 1.5,
    }
    p = Policy.from_spec(spec)
    assert p.sidecar.extra_env[0].name == "FOO"
    assert p.sidecar.resources.limits["cpu"] == 2
    assert p.to_spec()["sidecar"]["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("scheme", ALLOWED_SCHEMES)
def test_policy_every_allowed_scheme(scheme):
    assert Policy(storage=f"{scheme}://bucket/p").storage == f"{scheme}://bucket/p"


def test_policy_file_root_keeps_its_slash():
    assert Policy(storage="file:///").storage == "file:///"
    assert run_url(Policy(storage="file:///"), "ns", "r") == "file:///ns/r/"


@pytest.mark.parametrize(
    "storage",
    ["http://x/y", "https://bucket", "hdfs://nn/p", "bucket/prefix", "/data", "s3://", "s3:/b", "s3://b?x=1", "s3://b#f", "s3://b c", "S3://b"],
)
def test_policy_bad_storage_names_field_and_schemes(storage):
    with pytest.raises(pydantic.ValidationError) as info:
        Policy(storage=storage)
    text = str(info.value)
    assert "storage" in text
    for scheme in ALLOWED_SCHEMES:
        assert scheme in text


def test_policy_storage_dotdot_refused():
    with pytest.raises(pydantic.ValidationError, match=r"'\.\.'"):
        Policy(storage="s3://b/a/../c")


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"retention": {"keepLast": 0}}, ["keepLast", "greater than or equal to 1"]),
        ({"retention": {"keepEvery": 0}}, ["keepEvery"]),
        ({"sidecar": {"concurrency": 0}}, ["concurrency"]),
        ({"sidecar": {"graceSeconds": -1}}, ["graceSeconds"]),
        ({"sidecar": {"imagePullPolicy": "Sometimes"}}, ["imagePullPolicy", "IfNotPresent"]),
        ({"sidecar": {"resources": {"limits": {"memory": "lots"}}}}, ["limits.memory", "quantity"]),
        ({"sidecar": {"resources": {"requests": {"cpu": True}}}}, ["requests.cpu"]),
        ({"sidecar": {"resources": {"requests": {"cpu": 0.5}}}}, ["requests.cpu"]),
        ({"resolveTimeoutSeconds": 0}, ["resolveTimeoutSeconds"]),
        ({"resolveTimeoutSeconds": 30}, ["resolveTimeoutSeconds"]),
        ({"credentialsSecret": "Bad_Name"}, ["credentialsSecret"]),
        ({"retentoin": {}}, ["retentoin", "Extra inputs"]),
        ({"sidecar": {"extraEnv": [{"value": "x"}]}}, ["extraEnv", "name"]),
    ],
)
def test_policy_refuses(spec, words):
    with pytest.raises(pydantic.ValidationError) as info:
        Policy.from_spec({"storage": "s3://b", **spec})
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("qty", ["100m", "0.5", "1Gi", "128974848", "129e6", "1.5G", ".5", "+1", 2])
def test_policy_quantities_accepted(qty):
    Policy.from_spec({"storage": "s3://b", "sidecar": {"resources": {"requests": {"cpu": qty}}}})


def test_run_url_layout():
    p = Policy(storage="s3://bucket/prefix")
    assert run_url(p, "team-a", "train-0") == "s3://bucket/prefix/team-a/train-0/"
    assert run_url(Policy(storage="memory://x/"), "ns", "a.b") == "memory://x/ns/a.b/"


@pytest.mark.parametrize(
    "namespace, run, words",
    [
        ("team-a", "../other", ["run", "not a valid run name"]),
        ("team-a", "a/b", ["'/'"]),
        ("team-a", "s3://evil", ["not a valid run name"]),
        ("team-a", "", ["empty"]),
        ("team-a", "x" * 254, ["253"]),
        ("..", "r", ["namespace", "DNS-1123"]),
        ("a/b", "r", ["namespace"]),
        ("n" * 64, "r", ["63"]),
        ("", "r", ["namespace"]),
        ("Team", "r", ["namespace"]),
    ],
)
def test_run_url_refuses_escapes(namespace, run, words):
    with pytest.raises(RunNameError) as info:
        run_url(Policy(storage="s3://b"), namespace, run)
    for word in words:
        assert word in str(info.value)


def test_run_url_always_inside_base():
    base = "s3://bucket/prefix"
    for run in ["a", "a.b", "a-b-0", "x" * 253]:
        url = run_url(Policy(storage=base), "ns", run)
        assert url.startswith(base + "/ns/") and url.endswith("/") and ".." not in url
