"""Translating s3fs/adlfs storage options to the native (obstore) client, and choosing the client.

Pure: no server. What cannot be carried over exactly must be refused (the run then opens with the
fsspec backend, as before), never approximated.
"""

from __future__ import annotations

import pytest

from kresume.store import native
from kresume.store.native_options import Untranslatable, parse_connection_string, translate

SEAWEED = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
           "config_kwargs": {"region_name": "eu-west-1"}}


def test_s3fs_options_of_a_local_server_translate_exactly() -> None:
    cfg = translate("s3://bkt/base/ns/run/", SEAWEED, {})
    assert cfg.kind == "s3" and cfg.bucket == "bkt"
    assert cfg.config == {"access_key_id": "k", "secret_access_key": "s", "endpoint": "http://127.0.0.1:9000",
                          "aws_endpoint_url_s3": "http://127.0.0.1:9000", "region": "eu-west-1"}
    assert cfg.client_options == {"allow_http": True}
    assert not cfg.use_botocore_chain


def test_s3_environment_is_read_as_botocore_reads_it() -> None:
    env = {"AWS_ENDPOINT_URL_S3": "https://minio.local", "AWS_ENDPOINT_URL": "https://other", "AWS_REGION": "us-west-2",
           "AWS_ACCESS_KEY_ID": "k"}
    cfg = translate("s3://bkt/p", {}, env)
    assert cfg.config == {"endpoint": "https://minio.local", "aws_endpoint_url_s3": "https://minio.local",
                          "region": "us-west-2"}
    assert cfg.client_options == {}
    assert not cfg.use_botocore_chain  # obstore reads AWS_ACCESS_KEY_ID itself


def test_s3_without_credentials_obstore_can_find_uses_botocores_chain() -> None:
    cfg = translate("s3://bkt/p", {}, {"AWS_REGION": "us-east-1", "AWS_PROFILE": "train"})
    assert cfg.use_botocore_chain and cfg.profile == "train"
    irsa = translate("s3://bkt/p", {}, {"AWS_REGION": "us-east-1", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/t"})
    assert not irsa.use_botocore_chain


def test_an_explicit_endpoint_wins_over_aws_endpoint_url_s3_as_in_botocore() -> None:
    cfg = translate("s3://bkt/p", SEAWEED, {"AWS_ENDPOINT_URL_S3": "http://elsewhere"})
    assert cfg.config["endpoint"] == cfg.config["aws_endpoint_url_s3"] == "http://127.0.0.1:9000"


def test_sse_kms_and_addressing_style_and_timeouts_carry_over() -> None:
    cfg = translate("s3://bkt/p", {"s3_additional_kwargs": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "kid"},
                                   "config_kwargs": {"region_name": "us-east-1", "s3": {"addressing_style": "virtual"},
                                                     "connect_timeout": 5, "read_timeout": 60}}, {})
    assert cfg.config["server_side_encryption"] == "aws:kms" and cfg.config["sse_kms_key_id"] == "kid"
    assert cfg.config["virtual_hosted_style_request"] is True
    assert cfg.client_options == {"connect_timeout": "5s", "timeout": "60s"}


@pytest.mark.parametrize("options, key", [
    ({"profile": "x", "config_kwargs": {"region_name": "r"}}, "profile"),
    ({"s3_additional_kwargs": {"SSECustomerKey": "x"}, "config_kwargs": {"region_name": "r"}},
     "s3_additional_kwargs.SSECustomerKey"),
    ({"client_kwargs": {"verify": "/ca.pem", "region_name": "r"}}, "client_kwargs.verify"),
    ({"config_kwargs": {"proxies": {"https": "p"}, "region_name": "r"}}, "config_kwargs.proxies"),
    ({}, "region"),  # AWS without a region: s3fs asks the bucket, obstore cannot
])
def test_what_has_no_exact_equivalent_is_refused_by_name(options: dict, key: str) -> None:
    with pytest.raises(Untranslatable) as err:
        translate("s3://bkt/p", options, {})
    assert err.value.key == key


def test_fsspec_only_tuning_keys_are_ignored() -> None:
    cfg = translate("s3://bkt/p", {**SEAWEED, "max_concurrency": 1, "default_block_size": 5, "use_listings_cache": False},
                    {})
    assert "max_concurrency" not in cfg.config


def test_azurite_connection_string_translates() -> None:
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5PT0=;"
            "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
    assert parse_connection_string(conn)["AccountKey"] == "a2V5PT0="  # '=' inside a value is kept
    cfg = translate("az://ctr/base/ns/run", {"connection_string": conn}, {})
    assert cfg.kind == "azure" and cfg.bucket == "ctr"
    assert cfg.config == {"account_name": "devstoreaccount1", "account_key": "a2V5PT0=",
                          "endpoint": "http://127.0.0.1:10000/devstoreaccount1"}
    assert cfg.client_options == {"allow_http": True} and not cfg.use_azure_default_credential
    from_env = translate("abfs://ctr/p", {}, {"AZURE_STORAGE_CONNECTION_STRING": conn})
    assert from_env.config == cfg.config


def test_azure_account_without_key_uses_default_credential_like_adlfs() -> None:
    cfg = translate("abfs://ctr@acct.dfs.core.windows.net/p", {}, {})
    assert cfg.bucket == "ctr" and cfg.config == {"account_name": "acct"} and cfg.use_azure_default_credential
    with pytest.raises(Untranslatable) as err:
        translate("az://ctr/p", {"credential": object(), "account_name": "a"}, {})
    assert err.value.key == "credential"


def test_gcs_has_no_native_path() -> None:
    with pytest.raises(Untranslatable):
        translate("gs://bkt/p", {}, {})


def test_client_choice_option_wins_over_env_and_bad_values_name_the_setting() -> None:
    assert native.choose_client({}, {}) == "native"
    assert native.choose_client({}, {"KRESUME_STORE_CLIENT": "fsspec"}) == "fsspec"
    assert native.choose_client({"kresume_client": "native"}, {"KRESUME_STORE_CLIENT": "fsspec"}) == "native"
    with pytest.raises(ValueError, match="KRESUME_STORE_CLIENT='s3fs'"):
        native.choose_client({}, {"KRESUME_STORE_CLIENT": "s3fs"})


def test_open_falls_back_to_the_fsspec_backend_for_untranslatable_options() -> None:
    assert native.open_native("s3://bkt/p", {"profile": "x", "config_kwargs": {"region_name": "r"}}, {}) is None
    assert native.open_native("s3://bkt/p", {**SEAWEED, "kresume_client": "fsspec"}, {}) is None
    fs, root = native.open_native("s3://bkt/base/run/", SEAWEED, {})
    assert native.is_native(fs) and root == "bkt/base/run" and fs.key(root + "/x.json") == "base/run/x.json"
    with pytest.raises(ValueError, match="outside bucket"):
        fs.key("other/x")
