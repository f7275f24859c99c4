"""obstore's errors as the builtin exceptions fsspec backends raise, so :mod:`kresume.store.errors` maps them
alike (:mod:`kresume.store.native`'s module doc): missing object or bucket → ``FileNotFoundError``; 401/403 →
``PermissionError``; connection failures and timeouts → ``ConnectionError``; another HTTP error →
:class:`ServiceError` (an ``OSError`` with the status); anything else as obstore raised it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

_CONNECTION_MARKERS = ("error sending request", "connection refused", "connection reset", "connect error",
                       "timed out", "timeout", "connection closed", "broken pipe", "incomplete message",
                       "body error", "error decoding response body", "unexpected eof")
_MISSING_BUCKET = ("nosuchbucket", "containernotfound", "the specified container does not exist")


def mapped(exc: BaseException) -> BaseException:
    """The builtin exception fsspec backends would raise for an obstore error (module doc), or ``exc``."""
    from obstore import exceptions as ox

    text = str(exc).split("\n\nDebug source:", 1)[0].strip()
    low = text.lower()
    if any(m in low for m in _MISSING_BUCKET):
        # The store's error code sits in the XML body, past the first line that callers show.
        return FileNotFoundError(f"NoSuchBucket (bucket or container does not exist): {text.splitlines()[0]}")
    if isinstance(exc, FileNotFoundError):
        return exc
    if isinstance(exc, (ox.PermissionDeniedError, ox.UnauthenticatedError)):
        return PermissionError(_summary(text, _STATUS.search(text)))
    if isinstance(exc, ox.AlreadyExistsError):
        return FileExistsError(_summary(text, _STATUS.search(text)))
    status = _STATUS.search(text)
    if isinstance(exc, ox.GenericError) and status is None and any(m in low for m in _CONNECTION_MARKERS):
        return ConnectionError(text)
    if status is not None:
        return ServiceError(text, int(status.group(1)))
    return exc


_STATUS = re.compile(r"status code: (\d{3})")
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]*)</\1>")
_URL = re.compile(r"https?://\S+")


class ServiceError(OSError):
    """The store answered with an HTTP error. ``status`` is the HTTP status; the message's first line
    is ``<Code>: <Message> (HTTP <status>)`` from the store's XML error body, then obstore's text."""

    def __init__(self, text: str, status: int) -> None:
        super().__init__(_summary(text, _STATUS.search(text)))
        self.status = status
        self.code = dict(_XML_FIELD.findall(text)).get("Code")


def _summary(text: str, status: Any) -> str:
    """``<Code>: <Message> (HTTP <status>); <obstore's first line>`` when the store sent an XML error
    body (S3, Azure), else ``text``'s first line: the code and message callers show come first."""
    fields = dict(_XML_FIELD.findall(text))
    # Endpoints are left out (callers name the object's URL): digits of a port or a key must not read as
    # an HTTP status to the text checks of kresume.store.errors.is_transient.
    head = _URL.sub("<store>", text.splitlines()[0]) if text else ""
    where = f" (HTTP {status.group(1)})" if status is not None else ""
    if not fields:
        return head.split(" - Server returned")[0] + where if status is not None else head
    return f"{fields.get('Code', 'error')}: {fields.get('Message', '').strip()}{where}"


@contextlib.contextmanager
def errors_mapped() -> Iterator[None]:
    """Re-raise obstore errors as :func:`mapped` says (the original chained as ``__cause__``)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - mapped or re-raised unchanged
        out = mapped(exc)
        if out is exc:
            raise
        raise out from exc
