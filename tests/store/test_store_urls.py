"""The one URL rule (issue 12 item 3): run URLs (CLI, sidecar, ``resume_from``) and policy bases.

The policy variant of :func:`check_url` and :data:`STORAGE_PATTERN` (the CRD's and the chart's
pattern, evaluated by Go's RE2 with full-match semantics) must accept exactly the same strings:
checked on hand-picked cases and 20,000 seeded random strings built from URL-ish tokens.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from kresume import policy
from kresume.store import errors, storage, urls

CHART_SCHEMA = Path(__file__).parents[2] / "charts" / "kresume" / "values.schema.json"


def _policy_ok(url: str) -> bool:
    try:
        urls.check_url(url, policy=True)
        return True
    except errors.BadURL:
        return False


CASES = [
    ("s3://b/p", True), ("s3://b", True), ("s3://b/", True), ("s3://b//x", True), ("s3://my.bucket/x", True),
    ("gs://b/p", True), ("abfss://c@acct.dfs.core.windows.net/p", True), ("memory://x", True),
    ("file:///", True), ("file:///data/runs", True), ("file://x", True), ("s3://b/./x", True), ("s3://b/...", True),
    ("s3://", False), ("s3:///p", False), ("s3:/b/p", False), ("s3:b", False), ("b/p", False), ("/data", False),
    ("file://", False), ("http://b", False), ("S3://b", False), ("s3://b?versionId=1", False), ("s3://b#f", False),
    ("s3://b c", False), ("s3://b\tc", False), ("s3://b\n", False), ("s3://b/../c", False), ("s3://../c", False),
    ("file:///a/..", False), ("", False), (" ", False),
]


@pytest.mark.parametrize("url,ok", CASES)
def test_policy_rule_and_pattern_agree_on_cases(url, ok):
    assert _policy_ok(url) == ok
    assert (re.fullmatch(urls.STORAGE_PATTERN, url) is not None) == ok


def test_policy_rule_and_pattern_agree_on_random_strings():
    rng = random.Random(20261202)
    tokens = ["s3", "gs", "file", "memory", "az", "S3", "http", "x", "b", "-", "@", ".", "..", ":", "/", "//",
              "://", "?", "#", " ", "\t", "\n"]
    seen = {True: 0, False: 0}
    for _ in range(20000):
        s = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.5:  # start like a URL half of the time, so accepted strings are common too
            s = rng.choice(["s3://", "file://", "memory://", "gs://", "s3:/"]) + s
        ok = _policy_ok(s)
        assert (re.fullmatch(urls.STORAGE_PATTERN, s) is not None) == ok, repr(s)
        seen[ok] += 1
    assert seen[True] > 1000 and seen[False] > 1000, seen


def test_the_crd_and_the_chart_carry_the_rule():
    from kresume import crds

    spec = crds.policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["storage"]["pattern"] == urls.STORAGE_PATTERN == policy.STORAGE_PATTERN
    schema = json.loads(CHART_SCHEMA.read_text())
    assert schema["definitions"]["checkpointPolicySpec"]["properties"]["storage"]["pattern"] == urls.STORAGE_PATTERN


def test_pattern_is_re2_compatible():
    """No lookaround or backreference: the API server and Helm use Go's RE2."""
    assert not re.search(r"\(\?[=!<]|\\[1-9]", urls.STORAGE_PATTERN)


@pytest.mark.parametrize("url,needle,fix", [
    ("bucket/run/", "has no scheme", "s3://bucket/run/"),
    ("s3:/bucket/run/", "two slashes after 's3:'", "use s3://bucket/run/"),
    ("s3:bucket/run/", "two slashes after 's3:'", "use s3://bucket/run/"),
    ("gs:/b/r", "two slashes", "use gs://b/r"),
    ("s3://b/run?x", "contains '?'", "remove it"),
    ("file:///a b/run", "whitespace", "plain path"),
    ("s3://b/../run", "'..' segment", "without '..'"),
    ("s3://", "no bucket", "s3://BUCKET/"),
    ("az://", "no container", "az://CONTAINER/"),
    ("file:///", "no path", "file:///path"),
])
def test_run_url_errors_name_the_fix(url, needle, fix):
    with pytest.raises(errors.BadURL) as info:
        urls.check_url(url)
    assert needle in str(info.value) and fix in str(info.value), str(info.value)
    assert info.value.exit_code == 2


def test_run_urls_allow_absolute_paths_and_any_scheme():
    assert urls.check_url("/data/runs/ns/run/") == "file"
    assert urls.check_url("/data/my runs/ns/run/") == "file"  # a plain path may hold spaces
    assert urls.check_url("file:///data/runs/ns/run/") == "file"
    assert urls.check_url("hf://datasets/x") == "hf"  # the backend is open_fs's question
    with pytest.raises(errors.BadURL, match="has no scheme"):
        urls.check_url("runs/ns/run")  # relative: ambiguous (a bucket?), refused
    with pytest.raises(errors.BadURL, match="has no scheme"):
        urls.check_url("/data/x", policy=True)  # a policy needs a URL


def test_bucket_schemes_match_the_backend_table():
    assert set(urls.BUCKET_SCHEMES) == set(storage.BUCKET_PROTOCOLS)


def test_backend_options_merge_defaults_under_the_callers(monkeypatch):
    opts = storage.backend_options("s3", {"config_kwargs": {"region_name": "x", "read_timeout": 99}, "key": "k"})
    assert opts["config_kwargs"] == {"region_name": "x", "read_timeout": 99, "connect_timeout": 5,
                                     "retries": {"total_max_attempts": 3}}
    assert opts["key"] == "k" and opts["max_concurrency"] == 1
    from fsspec.config import conf

    monkeypatch.setitem(conf, "az", {"read_timeout": 7})  # fsspec config wins over kresume's default
    assert "read_timeout" not in storage.backend_options("az", {})
    gcs = storage.backend_options("gs", {})["requests_timeout"]
    assert (gcs.total, gcs.sock_connect, gcs.sock_read) == (None, 5.0, 30.0)
