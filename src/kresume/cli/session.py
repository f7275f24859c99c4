"""What every store command of one ``kresume`` process shares, without typer or rich at import: the storage
options, the store's retry count and the command's idle time budget with its watchdog, and the progress bar.

The typer commands (:mod:`kresume.cli.store_cmds`) and the fast path of the one-shot commands
(:mod:`kresume.cli.fast`) both use it, so a command behaves the same whichever parsed its argv.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kresume.store import errors

if TYPE_CHECKING:
    from kresume.store.runstore import RunStore

#: Tries per store request for the CLI (the sidecar keeps the store default): a person waiting at
#: a terminal for an unreachable endpoint wants the answer in seconds, not after a minute of backoff.
CLI_ATTEMPTS = 3

#: Seconds a command may go without an answer from the store (``--timeout`` / ``KRESUME_TIMEOUT``):
#: every answer and every chunk moved starts it again, so it bounds a store that does not answer
#: (exit 8) without cutting a long restore or commit of one that does. 0 turns it off.
CLI_TIMEOUT = 30.0
#: After the budget has passed, seconds the command gets to fail on its own path (a cancelled request
#: reported as "no answer before …") before the watchdog ends it with exit 8.
WATCHDOG_GRACE = 2.0

budget_seconds: list[float] = []  # --timeout of the command being run (set by the CLI's root options)
_budget: list[Any] = []  # the command's Deadline, once opened (one command per process)
_ended: list[threading.Event] = []  # set to stop the command's watchdog


class OptionError(ValueError):
    """A bad ``--storage-option`` item: ``str(exc)`` says what is wrong, :attr:`param_hint` names the option.
    The typer commands turn it into click's usage error (exit 2)."""

    param_hint = "--storage-option"


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["key=value", …]`` → dict; values that parse as JSON are decoded (``anon=true`` → True).

    Raises :class:`OptionError` naming the bad item when an item has no ``=``, an empty key, or a value that
    looks like JSON (starts with ``{``, ``[`` or ``"``) but does not parse.
    """
    opts: dict[str, Any] = {}
    for item in pairs or []:
        if "=" not in item:
            raise OptionError(f"{item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        if not key:
            raise OptionError(f"{item!r} has an empty KEY")
        try:
            opts[key] = json.loads(value)
        except ValueError:
            if value.lstrip().startswith(("{", "[", '"')):
                raise OptionError(f"{key}: {value!r} looks like JSON but does not parse") from None
            opts[key] = value
    return opts


def configure(debug: bool, attempts: int, timeout: float) -> None:
    """Apply the root options (``--debug``, ``--attempts``, ``--timeout``) for the command about to run:
    environment for the store layer, the command's budget, log levels."""
    import logging

    os.environ["KRESUME_DEBUG"] = "1" if debug else os.environ.get("KRESUME_DEBUG", "")
    os.environ["KRESUME_ATTEMPTS"] = str(attempts)
    budget_seconds[:] = [timeout]  # not via os.environ: in-process callers run many commands
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        # Backends log their own retries and tracebacks (gcsfs logs ERROR with a traceback before
        # raising); kresume reports the failure itself in one line.
        for name in ("gcsfs", "s3fs", "adlfs", "aiobotocore", "botocore", "azure", "fsspec"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def open_store(url: str, storage_options: dict[str, Any]) -> RunStore:
    """The run at ``url`` with the CLI's retry count (``KRESUME_ATTEMPTS``) and the command's budget."""
    from dataclasses import replace

    from kresume.store.runstore import RunStore
    from kresume.store.storage import transfer_settings

    attempts = int(os.environ.get("KRESUME_ATTEMPTS") or CLI_ATTEMPTS)
    settings = replace(transfer_settings(), attempts=attempts, deadline=command_budget(url))
    return RunStore.open(url, storage_options, settings)


def command_budget(url: str) -> Any:
    """The command's idle :class:`~kresume.store.deadline.Deadline` and its watchdog (``None`` when
    ``--timeout 0``). The watchdog prints one error line and exits 8 if the command has not ended
    ``WATCHDOG_GRACE`` s after the budget passed (a call the deadline cannot cancel)."""
    from kresume.store.deadline import Deadline, exit_now, watch

    seconds = budget_seconds[0] if budget_seconds else CLI_TIMEOUT
    if seconds <= 0:
        return None
    if _budget:
        return _budget[0]
    deadline = Deadline(f"the command's budget (--timeout {seconds:g} s without an answer from the store)",
                        idle=seconds)

    def give_up() -> None:
        unreachable = errors.StoreUnreachable(url, f"no answer for {seconds:g} s",
                                              fix="check the endpoint and network, or raise --timeout / KRESUME_TIMEOUT")
        print(f"kresume: error: {unreachable}", file=sys.stderr)
        exit_now(unreachable.exit_code)

    done = threading.Event()
    watch(deadline, give_up, after=WATCHDOG_GRACE, cancel=done, name="kresume-budget")
    _budget.append(deadline)
    _ended.append(done)
    return deadline


def end_command() -> None:
    """The command ended: stop its budget's watchdog (the CLI's root context calls this on close, so
    in-process callers such as a test runner go on safely)."""
    for done in _ended:
        done.set()
    _ended.clear()
    _budget.clear()


def touch(n: int) -> None:
    """Bytes moved: the store is answering (renews the command's budget)."""
    if _budget:
        _budget[0].touch()


_err: list[Any] = []


def err_console() -> Any:
    """The rich console on stderr for notes and the progress bar (rich is imported on first use)."""
    if not _err:
        from rich.console import Console

        _err.append(Console(stderr=True))
    return _err[0]


@contextmanager
def progress_bar(total: int, label: str, enabled: bool) -> Iterator[Any]:
    """A progress callback ``f(nbytes)`` (a rich bar on stderr when ``enabled``) that also renews the budget."""
    if not enabled:
        yield touch
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err_console(), transient=False) as progress:
        task = progress.add_task(label, total=total)

        def advance(n: int) -> None:
            touch(n)
            progress.advance(task, n)

        yield advance
