"""An S3 endpoint must be an http(s) URL: obstore panicked in Rust on ``127.0.0.1:9000`` (a backtrace, exit 1) and
botocore said only "Invalid endpoint" (new-user trial). Pure rule; the CLI shell is in tests/cli/test_cli_endpoint.py."""

from __future__ import annotations

import pytest

from kresume.store import errors
from kresume.store.urls import check_endpoints


@pytest.mark.parametrize(("options", "env", "where"), [
    ({"endpoint_url": "127.0.0.1:9000"}, {}, "endpoint_url '127.0.0.1:9000'"),
    ({"endpoint_url": "notaurl"}, {}, "endpoint_url 'notaurl'"),
    ({"endpoint_url": "ftp://host"}, {}, "endpoint_url 'ftp://host'"),
    ({"endpoint_url": "http://"}, {}, "endpoint_url 'http://'"),
    ({"client_kwargs": {"endpoint_url": "minio:9000"}}, {}, "client_kwargs.endpoint_url 'minio:9000'"),
    ({}, {"AWS_ENDPOINT_URL_S3": "seaweed:8333"}, "env AWS_ENDPOINT_URL_S3 'seaweed:8333'"),
    ({"endpoint_url": ""}, {}, "endpoint_url is empty"),
])
def test_a_bad_endpoint_is_refused_naming_where_it_came_from(options, env, where):
    with pytest.raises(errors.BadOption) as info:
        check_endpoints("s3://bucket/ns/run", options, env)
    assert where in str(info.value) and info.value.exit_code == 2
    assert ("omit it" if "empty" in where else "http://") in str(info.value)  # the fix


@pytest.mark.parametrize(("url", "options", "env"), [
    ("s3://b/r", {"endpoint_url": "http://127.0.0.1:9000"}, {}),
    ("s3://b/r", {"endpoint_url": "https://s3.example.com/"}, {"AWS_ENDPOINT_URL": "http://[::1]:8333"}),
    ("s3://b/r", {}, {"AWS_ENDPOINT_URL": ""}),  # an empty variable is unset
    ("gs://b/r", {}, {"AWS_ENDPOINT_URL": "not-for-gcs"}),  # botocore's variables only matter to s3://
    ("s3://b/r", {"client_kwargs": {"region_name": "x"}}, {}),
])
def test_good_or_absent_endpoints_pass(url, options, env):
    check_endpoints(url, options, env)
