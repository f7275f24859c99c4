"""Translating fsspec storage options (s3fs, adlfs) into obstore store settings (pure functions).

kresume's native data path (:mod:`kresume.store.native`) talks to S3 and Azure Blob through obstore
(Rust ``object_store``), but users configure kresume with the storage options of the fsspec
backends (``CheckpointPolicy.spec.storageOptions``, ``-o KEY=VALUE``, ``KRESUME_STORAGE_OPTIONS``)
and with those backends' environment variables and credential chains. This module maps what has
an exact obstore equivalent and refuses everything else: :func:`translate` raises
:class:`Untranslatable` naming the first option it cannot carry over, and the caller then opens the
run with the fsspec backend exactly as before (same URL, same options), so a configuration that
worked keeps working.

Sources of the option names: s3fs 2026.9 ``S3FileSystem.__init__`` and botocore's config
(``client_kwargs``/``config_kwargs``), adlfs 2026.8 ``AzureBlobFileSystem.__init__``, the Azure
Storage connection-string format (Microsoft Learn, "Configure Azure Storage connection strings"),
and obstore 0.12 ``S3Config``/``AzureConfig``/``ClientConfig``.

Credential chains. With no explicit keys, s3fs resolves credentials through botocore's chain
(environment, web identity, container and instance metadata, shared files and profiles). obstore
reads the environment, web identity and container/instance metadata itself; for the shared files,
profiles, SSO and ``credential_process`` :func:`translate` says ``use_botocore_chain`` and the
caller supplies botocore's own resolver. adlfs without a key, SAS or connection string uses
azure-identity's ``DefaultAzureCredential``; the caller supplies that same credential
(``use_azure_default_credential``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Protocols the native path serves, and the obstore store kind each maps to.
NATIVE_PROTOCOLS: dict[str, str] = {"s3": "s3", "s3a": "s3", "az": "azure", "abfs": "azure", "abfss": "azure"}

#: fsspec-side tuning keys with no effect on what is stored or who is asked (caching, block sizes,
#: concurrency of fsspec's own transfers): accepted and ignored by the native path.
_IGNORED_S3 = frozenset({
    "default_block_size", "default_fill_cache", "default_cache_type", "cache_regions", "max_concurrency",
    "fixed_upload_size", "asynchronous", "skip_instance_cache", "use_listings_cache", "listings_expiry_time",
    "max_paths", "loop", "version_aware", "use_ssl",
})
_IGNORED_AZURE = frozenset({
    "blocksize", "default_fill_cache", "default_cache_type", "max_concurrency", "asynchronous",
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths", "loop",
    "assume_container_exists", "version_aware", "location_mode",
})
_BOTOCORE_CONFIG_IGNORED = frozenset({"retries", "max_pool_connections", "request_checksum_calculation",
                                      "response_checksum_validation", "tcp_keepalive", "user_agent_extra"})
_SSE_KEYS = {"ServerSideEncryption": "server_side_encryption", "SSEKMSKeyId": "sse_kms_key_id",
             "BucketKeyEnabled": "sse_bucket_key_enabled"}
#: Environment variables with which obstore itself finds S3 credentials (obstore 0.12 ``S3Store``
#: docs: static keys, web identity / IRSA, ECS and EKS Pod Identity container credentials).
_OBSTORE_S3_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE",
                              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
#: botocore's region variables, in its order of precedence.
_REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")


class Untranslatable(ValueError):
    """A storage option (or setting) has no exact obstore equivalent; ``key`` names it."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}")
        self.key = key
        self.why = why


@dataclass(frozen=True)
class NativeConfig:
    """What opening one bucket/container with obstore needs.

    Attributes
    ----------
    kind : str
        ``s3`` or ``azure``.
    bucket : str
        Bucket or container name.
    config : dict
        obstore store settings (``S3Config`` / ``AzureConfig`` keys).
    client_options : dict
        obstore ``ClientConfig`` (timeouts as strings such as ``"30s"``, ``allow_http``…).
    use_botocore_chain : bool
        No credentials obstore can find itself: resolve them with botocore's chain (s3fs's).
    use_azure_default_credential : bool
        No key, SAS or connection string: use azure-identity's ``DefaultAzureCredential`` (adlfs's).
    profile : str or None
        The AWS profile for the botocore chain (``AWS_PROFILE``), when one is set.
    """

    kind: str
    bucket: str
    config: dict[str, Any]
    client_options: dict[str, Any] = field(default_factory=dict)
    use_botocore_chain: bool = False
    use_azure_default_credential: bool = False
    profile: str | None = None


def split_url(url: str) -> tuple[str, str, str]:
    """``(protocol, bucket, path)`` of a bucket URL (``s3://b/p/q`` → ``("s3", "b", "p/q")``).

    An adlfs URL ``abfs://container@account.dfs.core.windows.net/p`` keeps ``container@host`` as
    the bucket (see :func:`translate`). Raises ``Untranslatable`` for a URL without a bucket.
    """
    protocol, rest = url.split("://", 1)
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise Untranslatable("url", "no bucket")
    return protocol, bucket, path.strip("/")


def _seconds(value: Any, key: str) -> str:
    try:
        return f"{float(value):g}s"
    except (TypeError, ValueError):
        raise Untranslatable(key, f"not a number of seconds: {value!r}") from None


def _endpoint(url: str, client_options: dict[str, Any]) -> str:
    if url.startswith("http://"):
        client_options["allow_http"] = True
    return url.rstrip("/")


def translate(url: str, options: Mapping[str, Any], env: Mapping[str, str]) -> NativeConfig:
    """The obstore settings equivalent to opening ``url`` with fsspec ``options`` in environment ``env``.

    Raises
    ------
    Untranslatable
        The protocol has no native path, or an option/value has no exact equivalent (the caller
        falls back to the fsspec backend).
    """
    protocol, bucket, _ = split_url(url)
    kind = NATIVE_PROTOCOLS.get(protocol)
    if kind is None:
        raise Untranslatable("protocol", f"{protocol}:// has no native path")
    if kind == "s3":
        return _s3(bucket, dict(options), env)
    return _azure(bucket, dict(options), env)


# ----------------------------------------------------------------------------------------------- S3
def _s3(bucket: str, opts: dict[str, Any], env: Mapping[str, str]) -> NativeConfig:
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    aliases = {"username": "key", "password": "secret"}
    for alias, key in aliases.items():
        if alias in opts:
            opts.setdefault(key, opts.pop(alias))
    for key in ("key", "secret", "token"):
        value = opts.pop(key, None)
        if value is not None:
            config[{"key": "access_key_id", "secret": "secret_access_key", "token": "session_token"}[key]] = str(value)
    if opts.pop("anon", False):
        config["skip_signature"] = True
    if "endpoint_url" in opts:
        if opts["endpoint_url"]:
            config["endpoint"] = _endpoint(str(opts["endpoint_url"]), client)
        opts.pop("endpoint_url")
    if opts.pop("requester_pays", False):
        config["request_payer"] = True
    for key, value in dict(opts.pop("client_kwargs", None) or {}).items():
        if key == "endpoint_url" and value:
            config["endpoint"] = _endpoint(str(value), client)
        elif key == "region_name" and value:
            config["region"] = str(value)
        elif key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token") and value:
            config[{"aws_access_key_id": "access_key_id", "aws_secret_access_key": "secret_access_key",
                    "aws_session_token": "session_token"}[key]] = str(value)
        elif key == "verify" and value is False:
            client["allow_invalid_certificates"] = True
        elif key == "verify" and value is True:
            pass
        else:
            raise Untranslatable(f"client_kwargs.{key}", "no obstore equivalent")
    for key, value in dict(opts.pop("config_kwargs", None) or {}).items():
        if key == "region_name" and value:
            config["region"] = str(value)
        elif key in ("connect_timeout", "read_timeout"):
            client["connect_timeout" if key == "connect_timeout" else "timeout"] = _seconds(value, f"config_kwargs.{key}")
        elif key == "s3" and isinstance(value, Mapping) and set(value) <= {"addressing_style"}:
            style = value.get("addressing_style", "auto")
            if style == "virtual":
                config["virtual_hosted_style_request"] = True
            elif style not in ("path", "auto"):
                raise Untranslatable("config_kwargs.s3.addressing_style", f"unknown style {style!r}")
        elif key == "signature_version" and value in ("s3v4", "v4"):
            pass
        elif key in _BOTOCORE_CONFIG_IGNORED:
            pass
        else:
            raise Untranslatable(f"config_kwargs.{key}", "no obstore equivalent")
    for key, value in dict(opts.pop("s3_additional_kwargs", None) or {}).items():
        if key not in _SSE_KEYS:
            raise Untranslatable(f"s3_additional_kwargs.{key}", "no obstore equivalent")
        config[_SSE_KEYS[key]] = value if isinstance(value, bool) else str(value)
    for key in list(opts):
        if key in _IGNORED_S3:
            if key == "version_aware" and opts[key]:
                raise Untranslatable(key, "versioned reads are not used by the native path")
            opts.pop(key)
    if opts:
        key = sorted(opts)[0]
        raise Untranslatable(key, "not an option the native path knows (profile, session and the like need s3fs)")
    # Endpoint from botocore's service-specific variables (botocore >= 1.31 "endpoint_url" config).
    if "endpoint" not in config:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            if env.get(name):
                config["endpoint"] = _endpoint(env[name], client)
                break
    if "region" not in config:
        region = next((env[n] for n in _REGION_ENV if env.get(n)), None)
        if region is not None:
            config["region"] = region
        elif "endpoint" in config:
            config["region"] = "us-east-1"  # botocore's default; S3-compatible servers ignore it
        else:
            raise Untranslatable("region", "no region configured for AWS S3 (s3fs asks the bucket; set "
                                           "AWS_REGION or config_kwargs.region_name to use the native path)")
    if "endpoint" in config:
        # obstore lets AWS_ENDPOINT_URL_S3 (its key aws_endpoint_url_s3) win over ``endpoint``;
        # setting both keeps the precedence botocore has (explicit option, then the variable).
        config["aws_endpoint_url_s3"] = config["endpoint"]
    has_keys = "access_key_id" in config or config.get("skip_signature")
    chain = not has_keys and not any(env.get(n) for n in _OBSTORE_S3_CREDENTIAL_ENV)
    if "access_key_id" in config and "secret_access_key" not in config:
        raise Untranslatable("secret", "a key without a secret")
    return NativeConfig("s3", bucket, config, client, use_botocore_chain=chain, profile=env.get("AWS_PROFILE") or None)


# -------------------------------------------------------------------------------------------- Azure
def parse_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;…`` pairs of an Azure Storage connection string (keys as written; values may
    contain ``=``, as base64 account keys do)."""
    out = {}
    for part in text.split(";"):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise Untranslatable("connection_string", f"malformed part {key!r}")
            out[key.strip()] = value.strip()
    return out


def _azure(container: str, opts: dict[str, Any], env: Mapping[str, str]) -> NativeConfig:
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if "@" in container:  # abfs://container@account.dfs.core.windows.net/
        container, _, host = container.partition("@")
        account, _, suffix = host.partition(".")
        if suffix not in ("dfs.core.windows.net", "blob.core.windows.net"):
            raise Untranslatable("url", f"account host {host!r} is not an Azure public-cloud host")
        opts.setdefault("account_name", account)
    conn = opts.pop("connection_string", None) or (None if any(opts.get(k) for k in ("account_name", "account_key"))
                                                   else env.get("AZURE_STORAGE_CONNECTION_STRING"))
    if conn:
        parts = parse_connection_string(str(conn))
        known = {"DefaultEndpointsProtocol", "AccountName", "AccountKey", "BlobEndpoint", "EndpointSuffix",
                 "SharedAccessSignature", "QueueEndpoint", "TableEndpoint", "FileEndpoint"}
        unknown = sorted(set(parts) - known)
        if unknown:
            raise Untranslatable(f"connection_string.{unknown[0]}", "no obstore equivalent")
        if "AccountName" in parts:
            config["account_name"] = parts["AccountName"]
        if "AccountKey" in parts:
            config["account_key"] = parts["AccountKey"]
        if "SharedAccessSignature" in parts:
            config["sas_key"] = parts["SharedAccessSignature"]
        if "BlobEndpoint" in parts:
            config["endpoint"] = _endpoint(parts["BlobEndpoint"], client)
        elif "EndpointSuffix" in parts and "AccountName" in parts:
            scheme = parts.get("DefaultEndpointsProtocol", "https")
            config["endpoint"] = _endpoint(f"{scheme}://{parts['AccountName']}.blob.{parts['EndpointSuffix']}", client)
    for key, target in (("account_name", "account_name"), ("account_key", "account_key"), ("sas_token", "sas_key"),
                        ("tenant_id", "tenant_id"), ("client_id", "client_id"), ("client_secret", "client_secret")):
        value = opts.pop(key, None)
        if value:
            config[target] = str(value).lstrip("?") if key == "sas_token" else str(value)
    host = opts.pop("account_host", None)
    if host:
        config["endpoint"] = _endpoint(host if "://" in str(host) else f"https://{host}", client)
    if opts.pop("anon", False):
        config["skip_signature"] = True
    for key in ("timeout", "connection_timeout", "read_timeout"):
        if key in opts:
            value = opts.pop(key)
            if value is not None:
                client["connect_timeout" if key == "connection_timeout" else "timeout"] = _seconds(value, key)
    for key in list(opts):
        if key in _IGNORED_AZURE:
            if key == "version_aware" and opts[key]:
                raise Untranslatable(key, "versioned reads are not used by the native path")
            opts.pop(key)
    if opts:
        key = sorted(opts)[0]
        raise Untranslatable(key, "not an option the native path knows (a credential object and the like need adlfs)")
    for name, target in (("AZURE_STORAGE_ACCOUNT_NAME", "account_name"), ("AZURE_STORAGE_ACCOUNT_KEY", "account_key"),
                         ("AZURE_STORAGE_SAS_TOKEN", "sas_key")):
        if target not in config and env.get(name):
            config[target] = env[name].lstrip("?") if target == "sas_key" else env[name]
    if "account_name" not in config:
        raise Untranslatable("account_name", "no storage account (adlfs names the missing option)")
    if "endpoint" in config and config["endpoint"].endswith("/" + config["account_name"]):
        pass  # Azurite-style path endpoint http://host:port/<account>: obstore takes it as it is
    has_credential = any(k in config for k in ("account_key", "sas_key", "client_secret", "skip_signature"))
    return NativeConfig("azure", container, config, client, use_azure_default_credential=not has_credential)
