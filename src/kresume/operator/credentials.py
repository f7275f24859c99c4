"""Storage options the operator uses to read a run's store: the policy's options + its Secret (pure).

The sidecar gets a policy's ``credentialsSecret`` as env (``envFrom``), where s3fs/gcsfs/adlfs
find it themselves. The operator serves many namespaces from one process, so it must not put
another namespace's credentials into its own environment; it turns the Secret's keys into explicit
fsspec storage options instead:

=====================================  ==================  =========================================
Secret key (the env var the clients read)  option             backend (source: the library's docs)
=====================================  ==================  =========================================
``AWS_ACCESS_KEY_ID``                  ``key``             s3fs ``S3FileSystem(key=)``
``AWS_SECRET_ACCESS_KEY``              ``secret``          s3fs ``secret=``
``AWS_SESSION_TOKEN``                  ``token``           s3fs ``token=``
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``  ``endpoint_url``  s3fs ``endpoint_url=``
``AZURE_STORAGE_CONNECTION_STRING``    ``connection_string``  adlfs ``AzureBlobFileSystem(...)``
``AZURE_STORAGE_ACCOUNT_NAME``         ``account_name``    adlfs
``AZURE_STORAGE_ACCOUNT_KEY``          ``account_key``     adlfs
``AZURE_STORAGE_SAS_TOKEN``            ``sas_token``       adlfs
any key holding a JSON object with ``"type"`` (a service-account key file)  ``token`` (the dict)  gcsfs
=====================================  ==================  =========================================

Options written in the policy's ``storageOptions`` win over ones derived from the Secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

_S3 = {
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_SESSION_TOKEN": "token",
    "AWS_ENDPOINT_URL_S3": "endpoint_url",
    "AWS_ENDPOINT_URL": "endpoint_url",
}
_AZURE = {
    "AZURE_STORAGE_CONNECTION_STRING": "connection_string",
    "AZURE_STORAGE_ACCOUNT_NAME": "account_name",
    "AZURE_STORAGE_ACCOUNT_KEY": "account_key",
    "AZURE_STORAGE_SAS_TOKEN": "sas_token",
}
_BY_SCHEME = {"s3": _S3, "az": _AZURE, "abfs": _AZURE, "abfss": _AZURE}


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Secret's ``data`` (base64 values, core/v1) as text; undecodable entries are skipped."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def storage_options(url: str, policy_options: Mapping[str, Any], secret: Mapping[str, str] | None) -> dict[str, Any]:
    """fsspec options for ``url``: the Secret's credentials (table above) overlaid by the policy's own.

    ``secret`` is the decoded Secret (:func:`decode_secret`), or ``None`` when the policy names none.
    """
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    derived: dict[str, Any] = {}
    if secret:
        for key, option in _BY_SCHEME.get(scheme, {}).items():
            if key in secret and option not in derived:
                derived[option] = secret[key]
        if scheme in ("gs", "gcs"):
            for value in secret.values():
                try:
                    parsed = json.loads(value)
                except ValueError:
                    continue
                if isinstance(parsed, dict) and "type" in parsed:
                    derived["token"] = parsed
                    break
    return {**derived, **dict(policy_options)}
