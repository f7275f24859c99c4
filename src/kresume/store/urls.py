"""The one rule for store URLs: what every CLI command, the sidecar, ``resume_from`` and a policy accept.

Two uses of one rule (issue 12 item 3: ``s3:/bucket/run/`` and ``bucket/run/`` wrote a local folder
named ``s3:`` and exited 0, while the chart's schema refused the same string):

- a **run URL** (CLI, sidecar, ``resume_from``): any fsspec scheme (the backend is found later, by
  :func:`kresume.store.storage.open_fs`), or a plain absolute local path (``/data/runs/x``, the same
  as ``file:///data/runs/x``);
- a **policy base** (``CheckpointPolicy.spec.storage``, chart ``defaultPolicy``): a scheme of
  :data:`POLICY_SCHEMES`; ``file:///`` (the root) is a valid base, since ``<ns>/<run>/`` follows.

Both: ``<scheme>://`` with two slashes; no whitespace, ``?`` or ``#`` (a query or fragment would change
the meaning of the keys appended to it); no ``..`` path segment; a bucket scheme names its bucket.
:data:`STORAGE_PATTERN` is the policy rule as a regular expression in the RE2 subset (no lookahead)
that the Kubernetes API server and Helm evaluate; tests check that it and :func:`check_url` agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from kresume.store import errors

#: URL schemes a policy may store to (fsspec protocols of s3fs, gcsfs, adlfs and fsspec's own).
POLICY_SCHEMES: tuple[str, ...] = ("s3", "gs", "gcs", "az", "abfs", "abfss", "file", "memory")
#: Schemes whose first path component is a bucket or container.
BUCKET_SCHEMES: tuple[str, ...] = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
#: Characters a URL after ``://`` may not hold (ASCII whitespace as RE2's ``\s``, query, fragment).
FORBIDDEN = " \t\n\v\f\r?#"

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_ONE_SLASH = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/?(?!/)(.*)$", re.S)
_C = r"[^\t\n\v\f\r ?#/]"
_SEGMENT = rf"(?:[^\t\n\v\f\r ?#/.]{_C}*|\.[^\t\n\v\f\r ?#/.]{_C}*|\.\.{_C}+|\.)"  # any segment but ".."
_PATH = rf"(?:/(?:{_SEGMENT})?)*"


def policy_pattern(schemes: tuple[str, ...] = POLICY_SCHEMES) -> str:
    """The policy rule of :func:`check_url` as an anchored RE2/Python regular expression."""
    bucket = [s for s in schemes if s in BUCKET_SCHEMES]
    other = [s for s in schemes if s not in BUCKET_SCHEMES]
    alternatives = []
    if bucket:
        alternatives.append(rf"(?:{'|'.join(bucket)})://{_SEGMENT}{_PATH}")
    if other:
        alternatives.append(rf"(?:{'|'.join(other)})://(?:{_SEGMENT}{_PATH}|(?:/(?:{_SEGMENT})?)+)")
    return "^(?:" + "|".join(alternatives) + ")$"


STORAGE_PATTERN = policy_pattern()
"""The CRD's and the chart schema's ``storage`` pattern (use with full-match semantics, as Go does)."""

_EXAMPLES = "s3://bucket/prefix/<namespace>/<run>/ or file:///data/runs/<namespace>/<run>/"


def check_url(url: str, *, policy: bool = False) -> str:
    """Return the protocol of ``url`` (``"file"`` for a plain absolute path) if the rule allows it.

    ``policy=True`` applies the policy-base variant (schemes of :data:`POLICY_SCHEMES` only, no plain
    paths, the root ``file:///`` allowed). Needs no backend: whether a run-URL scheme has an
    installed fsspec implementation is :func:`kresume.store.storage.open_fs`'s question.

    Raises
    ------
    BadURL
        One line naming what is wrong and the fix: empty; no scheme (``bucket/run/``); one slash
        (``s3:/bucket/run/``); a scheme a policy cannot use; whitespace, ``?`` or ``#``; a ``..``
        segment; no bucket (``s3://``); no path (``file://``).
    """
    if not url or not url.strip():
        raise errors.BadURL(repr(url), f"the {'storage' if policy else 'run'} URL is empty",
                            fix=f"give one, e.g. {_EXAMPLES}")
    if "://" not in url:
        m = _ONE_SLASH.match(url)
        if m and not url.startswith("/"):
            scheme, rest = m.group(1), m.group(2)
            raise errors.BadURL(url, f"a URL needs two slashes after {scheme + ':'!r}",
                                fix=f"use {scheme.lower()}://{rest.lstrip('/')}")
        if os.path.isabs(url) and not policy:
            return "file"
        where = f"file://{os.path.abspath(url)}" if policy or os.path.isabs(url) else os.path.abspath(url)
        raise errors.BadURL(url, "the URL has no scheme",
                            fix=f"write s3://{url.lstrip('/')} (or gs://, az://) for a bucket, or {where} for a local "
                                "folder" + ("" if policy else " (a plain absolute path works too)"))
    scheme, rest = url.split("://", 1)
    if policy and scheme not in POLICY_SCHEMES:
        raise errors.BadURL(url, f"scheme {scheme!r} cannot be used by a policy",
                            fix=f"use one of {', '.join(s + '://' for s in POLICY_SCHEMES)}")
    if not policy and not _SCHEME.fullmatch(scheme.lower()):
        raise errors.BadURL(url, f"{scheme!r} is not a URL scheme", fix=f"use e.g. {_EXAMPLES}")
    bad = sorted({c for c in rest if c in FORBIDDEN})
    if bad:
        names = ", ".join("whitespace" if c.isspace() else repr(c) for c in bad)
        raise errors.BadURL(url, f"the URL contains {names}",
                            fix="remove it: a query or fragment would change the keys kresume appends; for a local "
                                "path with spaces give the plain path instead of a file:// URL")
    if ".." in rest.split("/"):
        raise errors.BadURL(url, "the URL has a '..' segment", fix="write the path without '..'")
    if scheme in BUCKET_SCHEMES and not rest.split("/", 1)[0]:
        what = "container" if scheme.startswith(("az", "abfs")) else "bucket"
        raise errors.BadURL(url, f"the URL has no {what}", fix=f"use {scheme}://{what.upper()}/prefix/<namespace>/<run>/")
    if not rest or (not policy and scheme in ("file", "memory", "local") and not rest.strip("/")):
        raise errors.BadURL(url, "the URL has no path", fix=f"use {scheme}:///path/to/runs/<namespace>/<run>/")
    return scheme


#: Where an S3-compatible endpoint can be given: storage options (s3fs's spelling, which the native client also reads)
#: and botocore's environment variables.
ENDPOINT_OPTIONS = ("endpoint_url",)
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def check_endpoints(url: str, storage_options: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Refuse an endpoint that is not an ``http(s)://host[:port]`` URL before any client is built.

    Both clients fail late and badly on one: obstore panics in Rust (``InvalidUri``, a backtrace and exit 1) and
    botocore raises ``ValueError: Invalid endpoint`` at the first request (measured: ``-o endpoint_url=127.0.0.1:9000``,
    new-user trial 2026-12-02). Checked: ``endpoint_url`` at the top level and in ``client_kwargs``, and, for s3://
    URLs, ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``. An empty option is refused too (botocore: "Invalid
    endpoint"); an empty variable means unset.

    Raises
    ------
    BadOption
        Names the option or variable, the value and the fix (exit 2).
    """
    from urllib.parse import urlsplit

    found: list[tuple[str, Any]] = []
    for key in ENDPOINT_OPTIONS:
        found.append((key, storage_options.get(key)))
        client = storage_options.get("client_kwargs")
        if isinstance(client, Mapping):
            found.append((f"client_kwargs.{key}", client.get(key)))
    if url.startswith(("s3://", "s3a://")):
        found.extend((f"env {name}", env.get(name)) for name in ENDPOINT_ENV)
    for where, value in found:
        if value is None or (value == "" and where.startswith("env ")):
            continue
        if value == "":
            raise errors.BadOption(url, f"{where} is empty", fix="omit it to use the store's default endpoint")
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            fix = f"write it with its scheme: http://{value}" if "://" not in str(value) else \
                "write it as http://HOST[:PORT] or https://HOST[:PORT]"
            raise errors.BadOption(url, f"{where} {str(value)!r} is not an http:// or https:// URL", fix=fix)
