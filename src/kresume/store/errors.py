"""Errors of the store protocol, and the one place that maps backend exceptions onto them.

fsspec backends raise builtin ``OSError`` subclasses (fsspec's own convention: s3fs's
``translate_boto_error``, gcsfs's ``HttpError`` mapping, adlfs's ``ResourceNotFoundError`` →
``FileNotFoundError``) plus a few library-specific exceptions (botocore's ``NoCredentialsError``,
azure-core's ``ClientAuthenticationError``, google-auth's ``DefaultCredentialsError``). kresume
code never catches those directly: :func:`translate` turns them into a :class:`StoreError` whose
one-line message names the URL, the cause and the fix, and :func:`is_transient` says whether a
retry may help.
"""

from __future__ import annotations

import errno
import os
import re


class StoreError(Exception):
    """A store operation failed; ``str(err)`` is one line naming the URL, the cause and the fix.

    Attributes
    ----------
    url : str
        The URL the operation was about.
    exit_code : int
        The CLI exit code for this kind of failure (documented in the README).
    """

    exit_code = 1
    cause = "store error"

    def __init__(self, url: str, detail: str = "", *, fix: str = "") -> None:
        self.url = url
        self.detail = detail
        self.fix = fix
        parts = [f"{url}: {self.cause}"]
        if detail:
            parts.append(detail)
        msg = ": ".join(parts)
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class UsageError(StoreError):
    """The command line cannot be used as given (exit 2, like typer's own usage errors)."""

    exit_code = 2
    cause = "bad usage"


class BadURL(UsageError):
    """The run URL is empty, has no bucket or path, or names a protocol no installed backend handles."""

    cause = "bad URL"


class BadOption(UsageError):
    """A storage option (``-o KEY=VALUE``, a policy's ``storageOptions``) the backend does not accept."""

    cause = "storage option not accepted"


class AmbiguousCheckpoint(UsageError):
    """A checkpoint name matches several committed checkpoints where exactly one is required."""

    cause = "ambiguous checkpoint name"


class NotARun(StoreError):
    """The URL holds no kresume run (no manifests, no pointer) where one was required."""

    exit_code = 3
    cause = "not a kresume run"


class NoCheckpoint(StoreError):
    """The run exists but has no committed, valid checkpoint (or not the one asked for)."""

    exit_code = 4
    cause = "no committed checkpoint"


class NoCredentials(StoreError):
    """The backend found no credentials."""

    exit_code = 5
    cause = "no credentials"


class PermissionDenied(StoreError):
    """Credentials were found but lack permission."""

    exit_code = 6
    cause = "permission denied"


class BucketMissing(StoreError):
    """The bucket / container does not exist."""

    exit_code = 7
    cause = "bucket or container does not exist"


class StoreUnreachable(StoreError):
    """The endpoint could not be reached, or kept failing after retries."""

    exit_code = 8
    cause = "store unreachable"


class CorruptCheckpoint(StoreError):
    """A committed checkpoint's objects are missing, have the wrong size, or fail their checksum."""

    exit_code = 9
    cause = "checkpoint is corrupt"


class CommitConflict(StoreError):
    """A manifest with other bytes already exists under the id being committed (nothing was
    overwritten), or a multi-rank checkpoint's parts disagree about a file."""

    cause = "conflicting commit"


class SourceError(StoreError):
    """A local checkpoint could not be committed as it was (base class)."""

    exit_code = 10
    cause = "local checkpoint unusable"


class SourceChanged(SourceError):
    """A local file changed (size or mtime) while it was uploaded; the commit was abandoned.

    Measured in writers.md: Lightning rewrites ``last.ckpt`` in place (O_TRUNC) when ``$TMPDIR`` is
    on another filesystem, and DCP rewrites shards of an existing folder in place. A copy read
    during such a rewrite is corrupt, so it must never be committed.
    """

    cause = "local checkpoint changed during upload"


class SourceUnreadable(SourceError):
    """A local file cannot be read by this process (writers.md: safetensors leaves mode 0600)."""

    cause = "local checkpoint is not readable"


class SourceIncomplete(SourceError):
    """A captured file fails its format's content check (a truncated torch zip, a safetensors header
    longer than the file, JSON that does not parse): it is never committed (DESIGN.md "nothing partial")."""

    cause = "local checkpoint is incomplete or corrupt"


class DestinationError(StoreError):
    """A restore destination cannot be used (not a folder, not writable)."""

    exit_code = 10
    cause = "restore destination unusable"


class OutsideRoot(SourceError):
    """A path resolves outside the folder kresume was told to read from; it is never read."""

    cause = "path is outside the watched folder"


def is_transient(exc: BaseException) -> bool:
    """Return True when retrying the same request may succeed (throttling, 5xx, timeouts, resets).

    Rules: HTTP 429/500/502/503/504 and S3's ``SlowDown``/``RequestTimeout``/``InternalError``
    codes (AWS S3 error-code table), connection errors and timeouts of aiohttp/botocore/requests,
    and bodies that arrived cut or corrupted (checksum or length mismatch of a response).
    Authentication, permission, missing-object and local errors are never transient.
    """
    if isinstance(exc, StoreError):
        return isinstance(exc, StoreUnreachable)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    text = str(exc)
    if name in {
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ServerTimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ServiceRequestError",
        "ServiceResponseError",
        "TransportError",
        # A body cut or corrupted on the way: botocore's response checksum check (x-amz-checksum-*),
        # its Content-Length check, aiohttp's payload errors. Committed objects never change, so a
        # new request reads the right bytes (seen with a truncating proxy in tests/faults).
        "FlexibleChecksumError",
        "IncompleteReadError",
        "ResponseStreamingError",
        "ClientPayloadError",
        "ContentLengthError",
        "ResponseParserError",  # botocore: an XML/JSON answer cut on the way (listings carry no checksum)
    }:
        return True
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None) or getattr(exc, "code", None)
    if isinstance(status, int) and (status == 429 or 500 <= status <= 599):
        return True
    markers = ("SlowDown", "Throttl", "TooManyRequests", "RequestTimeout", "InternalError",
               "ServiceUnavailable", "503", "500 Internal", "502", "504")
    # s3fs's ERROR_CODE_TO_EXCEPTION maps S3 "InternalError"/500 to EREMOTEIO and "SlowDown"/503 to
    # EBUSY, dropping the code from the message; both are retryable per the S3 error-code table.
    if isinstance(exc, OSError) and exc.errno in (errno.ETIMEDOUT, errno.ECONNRESET, errno.EAGAIN, errno.EBUSY,
                                                  getattr(errno, "EREMOTEIO", errno.EIO)):
        return True
    return any(m in text or m in name for m in markers)


_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '([^']+)'")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
"""The kresume package folder (``…/kresume/``): frames inside it are kresume's own code."""


def _rejected_option(exc: BaseException) -> str | None:
    """The keyword a backend constructor refused, when ``exc`` is that ``TypeError``.

    Backends keep unknown storage options and pass them on when they first connect (s3fs hands its
    leftover keywords to ``aiobotocore.AioSession(**kwargs)``, which raises ``TypeError: ... got an
    unexpected keyword argument 'bogus'`` at the first request). A ``TypeError`` whose innermost frame
    is kresume's own code is a kresume bug, not a bad option, and is not mapped.
    """
    if not isinstance(exc, TypeError):
        return None
    m = _UNEXPECTED_KWARG.search(str(exc))
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if m is None or (tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)):
        return None
    return m.group(1)


def bad_option(exc: BaseException, url: str) -> BadOption | None:
    """A :class:`BadOption` naming the storage option ``exc`` shows the backend refused, else ``None``."""
    key = _rejected_option(exc)
    if key is None:
        return None
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    return BadOption(url, f"{key!r} is not accepted by the {protocol}:// backend: {str(exc).strip()}",
                     fix=f"remove -o {key}=… or storageOptions.{key}; the backend's documentation lists its options")


def translate(exc: BaseException, url: str) -> StoreError:
    """Map a backend exception raised while working on ``url`` to a :class:`StoreError`.

    The mapping is by exception type and by the backend's error code in the message (s3fs
    formats ``"An error occurred (NoSuchBucket) ..."``; gcsfs ``HttpError`` carries ``code``;
    adlfs raises azure-core errors with ``error_code``). A storage option the backend refused
    (see :func:`bad_option`) becomes :class:`BadOption`. Unknown errors keep their message.
    """
    if isinstance(exc, StoreError):
        return exc
    option = bad_option(exc, url)
    if option is not None:
        return option
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    low = text.lower()
    if name in {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
                "CredentialRetrievalError", "ClientAuthenticationError", "CredentialUnavailableError"} \
            or "invalidaccesskeyid" in low or "no credentials" in low or "unable to locate credentials" in low \
            or "must provide either a connection_string or account_name" in low:
        return NoCredentials(url, text, fix="set credentials: env (AWS_ACCESS_KEY_ID…), the policy's "
                                            "credentialsSecret, or fsspec storage options")
    if "nosuchbucket" in low or "containernotfound" in low or "bucket does not exist" in low \
            or "the specified container does not exist" in low:
        bucket = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
        return BucketMissing(url, f"{bucket!r}: {text}" if bucket else text,
                             fix="create it first, or fix its name in the URL")
    if isinstance(exc, PermissionError) or "accessdenied" in low or "forbidden" in low or "403" in low \
            or "signaturedoesnotmatch" in low or "authorizationfailure" in low:
        return PermissionDenied(url, text, fix="grant list/read/write on this prefix to the credentials in use")
    if is_transient(exc):
        return StoreUnreachable(url, f"{name}: {text}", fix="check the endpoint and network; retries were exhausted")
    if isinstance(exc, FileNotFoundError):
        return NotARun(url, text)
    return StoreError(url, f"{name}: {text}")


_PRECONDITION_CODES = frozenset({
    "PreconditionFailed",  # S3 412 (AWS, moto with a Condition field; SeaweedFS without)
    "ConditionalRequestConflict",  # S3 409: a concurrent conditional write; AWS says retry
    "ConditionNotMet", "TargetConditionNotMet",  # Azure 412
    "BlobAlreadyExists",  # Azure 409 for If-None-Match: *
})
_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "BlobNotFound"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its explicit causes (s3fs keeps botocore's ClientError as ``__cause__``)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__
    return seen


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


def is_precondition_failed(exc: BaseException) -> bool:
    """Whether ``exc`` says a conditional write's precondition did not hold (nothing was written).

    Forms seen (conditional.py's table): ``FileExistsError`` (s3fs for ``If-None-Match`` with
    a ``Condition`` field, gcsfs for any 412, adlfs for an existing blob), an S3 ``ClientError``
    with code ``PreconditionFailed``/``ConditionalRequestConflict`` (s3fs maps it to
    ``OSError(EINVAL)``, keeping the ClientError as cause), azure-core ``ResourceModifiedError``
    / ``ResourceExistsError`` or an Azure ``ConditionNotMet``/``BlobAlreadyExists`` code, or any
    HTTP 412.
    """
    for e in _chain(exc):
        if isinstance(e, FileExistsError) or type(e).__name__ in {"ResourceModifiedError", "ResourceExistsError"}:
            return True
        if _error_code(e) in _PRECONDITION_CODES:
            return True
        status = getattr(e, "status_code", None) or getattr(e, "status", None)
        if status == 412:
            return True
    return False


def is_missing_object(exc: BaseException) -> bool:
    """Whether ``exc`` says the object (not its bucket or container) does not exist: S3
    ``NoSuchKey``, Azure ``BlobNotFound`` (an ``If-Match`` write to a deleted object answers so)."""
    return any(_error_code(e) in _MISSING_OBJECT_CODES for e in _chain(exc))
