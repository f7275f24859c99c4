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
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from kresume.cli import store_cmds
from kresume.store import errors

app = typer.Typer(
    name="kresume",
    help="Keep ML training alive across preemption: commit checkpoints to object storage and resume from them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
store_cmds.register(app)


_STORE_COMMANDS = {"ls", "latest", "verify", "restore", "prune", "commit", "mark-bad", "unmark-bad"}
_mounted = False


def _mount_optional(argv: list[str] | None = None) -> None:
    """Mount ``sidecar``, ``operator``, ``demo`` and ``dev`` unless a store command is being run.

    Their modules import kopf, kubernetes and pydantic models (about 1 s of start-up, measured with
    ``python -X importtime``); ``kresume commit``/``restore`` skip that cost. ``--help`` lists them all.
    """
    global _mounted
    args = sys.argv[1:] if argv is None else argv
    first = next((a for a in args if not a.startswith("-")), None)
    if _mounted or first in _STORE_COMMANDS:
        return
    from kresume.cli import extra_cmds

    extra_cmds.register(app)
    _mounted = True


#: One-shot store commands: when one has finished, the process exits without the interpreter's
#: teardown (module and object finalisation: 0.3-0.4 s of every ``kresume restore``/``commit`` on a
#: 2-core machine, measured with py-spy; s5cmd's whole run takes 0.2 s). Their work is complete and
#: synchronous by then: files renamed into place, manifest and pointer written, output flushed below.
FAST_EXIT = frozenset({"ls", "latest", "verify", "restore", "prune", "commit", "mark-bad", "unmark-bad"})
_invoked: list[str] = []


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs.", envvar="KRESUME_DEBUG"),
    attempts: int = typer.Option(3, "--attempts", min=1, envvar="KRESUME_ATTEMPTS",
                                 help="Tries per store request on throttling/5xx/unreachable (backoff with jitter)."),
    timeout: float = typer.Option(
        30.0, "--timeout", min=0, envvar="KRESUME_TIMEOUT", metavar="SECONDS",
        help="Fail with exit 8 when the store has not answered for this long (every answer and every chunk "
             "moved starts it again, so a long restore of a live store is never cut); 0 = no budget. "
             "Requests also have connect/read timeouts of their own (README)."),
) -> None:
    if ctx.invoked_subcommand:
        _invoked.append(ctx.invoked_subcommand)
    ctx.call_on_close(store_cmds.end_command)  # the command's store budget ends with it
    os.environ["KRESUME_DEBUG"] = "1" if debug else os.environ.get("KRESUME_DEBUG", "")
    os.environ["KRESUME_ATTEMPTS"] = str(attempts)
    store_cmds.budget_seconds[:] = [timeout]  # not via os.environ: in-process callers run many commands
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        # Backends log their own retries and tracebacks (gcsfs logs ERROR with a traceback before
        # raising); kresume reports the failure itself in one line.
        for name in ("gcsfs", "s3fs", "adlfs", "aiobotocore", "botocore", "azure", "fsspec"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, print StoreErrors as one line, exit with their code."""
    _mount_optional(argv)
    try:
        app(args=argv, standalone_mode=True)
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
    :data:`FAST_EXIT`, else through ``sys.exit`` (long-running commands clean up in their own way)."""
    if not _invoked or _invoked[-1] not in FAST_EXIT:
        sys.exit(code)
    from kresume.store.deadline import exit_now

    exit_now(code)
