"""The ``kresume`` command line.

Exit codes (also in the README):

== ======================================================================
0  success
1  store error not covered below
2  bad usage: typer/click's own, and kresume's ``UsageError`` (empty URL, no ``://`` or one slash,
   unknown scheme, no bucket,
   a storage option the backend refuses, an ambiguous checkpoint name)
3  the URL is not a kresume run (``ls`` of a URL that holds nothing)
4  the run has no committed checkpoint (or not the one asked for)
5  no credentials
6  permission denied
7  bucket or container missing (checked when a run turns out empty)
8  store unreachable (after retries) or time budget exceeded
9  a committed checkpoint is corrupt (verify found problems, restore mismatch)
10 the local checkpoint could not be committed (changed, unreadable, incomplete, outside root), or
   the restore destination is unusable (a file, read-only, full disk)
== ======================================================================

Start-up: ``kresume restore`` and ``kresume latest`` with plain arguments (what the restore init step runs) are
parsed by :mod:`kresume.cli.fast` and run without building the typer app; everything else — ``--help``, any
usage error, every other command — goes through the typer app (:mod:`kresume.cli.typer_app`, imported on first
use of :data:`app`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    """``kresume.cli.app``: the typer application, built on first access."""
    if name == "app":
        from kresume.cli.typer_app import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command (the fast path when it applies, else the typer app), print
    StoreErrors as one line, exit with their code."""
    from kresume.cli import fast

    args = sys.argv[1:] if argv is None else list(argv)
    call = fast.parse(args, os.environ)
    if call is not None:
        fast.run(call)  # never returns
    from kresume.cli import typer_app as app_mod
    from kresume.store import errors

    app_mod.mount_optional(args)
    try:
        app_mod.app(args=argv, standalone_mode=True)
    except errors.StoreError as exc:
        if os.environ.get("KRESUME_DEBUG") in ("1", "true"):
            raise
        print(f"kresume: error: {exc}", file=sys.stderr)
        _exit(exc.exit_code)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _exit(exc.code or 0)
        raise


def _exit(code: int) -> None:
    """Exit with ``code``: at once (``os._exit`` after flushing logs and output) after a command of
    :data:`kresume.cli.typer_app.FAST_EXIT`, else through ``sys.exit`` (long-running commands clean up in their own way)."""
    from kresume.cli import typer_app as app_mod

    if not app_mod.invoked or app_mod.invoked[-1] not in app_mod.FAST_EXIT:
        sys.exit(code)
    from kresume.store.deadline import exit_now

    exit_now(code)
