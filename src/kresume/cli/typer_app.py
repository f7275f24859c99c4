"""The typer application behind ``kresume``: every command, ``--help``, and click's usage errors (exit 2).

:func:`kresume.cli.main` builds it only when the fast path (:mod:`kresume.cli.fast`) does not take the
command line.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import typer.core

from kresume.cli import session, store_cmds

#: kresume's own options (the root callback's), by name: (the environment variable that also sets it, its value).
GLOBAL_OPTIONS = {"--debug": ("KRESUME_DEBUG", ""), "--attempts": ("KRESUME_ATTEMPTS", " N"),
                  "--timeout": ("KRESUME_TIMEOUT", " SECONDS")}


class KresumeGroup(typer.core.TyperGroup):
    """The root group: a global option written after the command (``kresume ls URL --timeout 5``) fails with
    the usage error (exit 2) as before, and the message says where the option goes.

    The error is matched by class name: typer ≥ 0.2x raises its vendored click's ``NoSuchOption``, older
    typers click's own; both carry ``option_name`` and ``message``."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            name = str(getattr(exc, "option_name", "") or "").split("=", 1)[0]
            if type(exc).__name__ == "NoSuchOption" and name in GLOBAL_OPTIONS:
                env, value = GLOBAL_OPTIONS[name]
                exc.message = (f"No such option: {name} (an option of kresume itself: put it before the command, "
                               f"`kresume {name}{value} {ctx.invoked_subcommand} ...`, or set {env})")
            raise


app = typer.Typer(
    cls=KresumeGroup,
    name="kresume",
    help="Keep ML training alive across preemption: commit checkpoints to object storage and resume from them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
store_cmds.register(app)


STORE_COMMANDS = frozenset({"ls", "latest", "verify", "restore", "prune", "commit", "mark-bad", "unmark-bad"})
_mounted = False


def mount_optional(argv: list[str] | None = None) -> None:
    """Mount ``sidecar``, ``operator``, ``demo`` and ``dev`` unless a store command is being run.

    Their modules import kopf, kubernetes and pydantic models (about 1 s of start-up, measured with
    ``python -X importtime``); ``kresume commit``/``restore`` skip that cost. ``--help`` lists them all.
    """
    global _mounted
    args = sys.argv[1:] if argv is None else argv
    first = next((a for a in args if not a.startswith("-")), None)
    if _mounted or first in STORE_COMMANDS:
        return
    from kresume.cli import extra_cmds

    extra_cmds.register(app)
    _mounted = True


#: One-shot store commands: when one has finished, the process exits without the interpreter's
#: teardown (module and object finalisation: 0.3-0.4 s of every ``kresume restore``/``commit`` on a
#: 2-core machine, measured with py-spy; s5cmd's whole run takes 0.2 s). Their work is complete and
#: synchronous by then: files renamed into place, manifest and pointer written, output flushed below.
FAST_EXIT = STORE_COMMANDS
invoked: list[str] = []


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
        invoked.append(ctx.invoked_subcommand)
    ctx.call_on_close(session.end_command)  # the command's store budget ends with it
    session.configure(debug, attempts, timeout)
