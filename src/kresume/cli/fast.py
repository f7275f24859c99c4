"""The fast path of ``kresume restore`` and ``kresume latest``: parse a plain command line without typer.

Why: the restore step of every restarted pod runs ``kresume restore``; building the typer app costs more than
the rest of a small restore (typer, click, rich and the pydantic adapters typer ≥ 0.20 coerces values with:
~0.1–0.2 s of a ~0.4 s command on this 2-core machine, bench/RESULTS.md "CLI start-up").

:func:`parse` accepts only command lines whose meaning is certain — the subcommand's own options, long options
as ``--name value`` or ``--name=value``, short ones as ``-o value``, values of the types the typer command
declares (integers and decimals in plain digits, within the same bounds) — and returns ``None`` for anything
else: ``-h``/``--help``, an unknown or repeated option, a value that starts with ``-``, ``--``, a missing or
extra argument, a bad number or a bad ``--storage-option``. Those go to the typer app, so help, usage errors
(exit 2 naming the option) and click's edge cases stay exactly as they are. The environment variables the
typer options read (``KRESUME_DEBUG``, ``KRESUME_ATTEMPTS``, ``KRESUME_TIMEOUT``, ``KRESUME_CACHE_DIR``) are
read the same way, an empty value counting as unset (click's rule). tests/cli/test_cli_fast_path.py checks
the result against typer's own parse of the same command line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

_INT = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
#: Boolean words click and pydantic both accept for a flag's environment variable (any case).
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _integer(text: str, low: int) -> int | None:
    return int(text) if _INT.fullmatch(text) and int(text) >= low else None


def _decimal(text: str) -> float | None:
    return float(text) if _DECIMAL.fullmatch(text) else None


@dataclass(frozen=True)
class Opt:
    """One option: its parameter name, how its value converts (``None`` = reject), repeatable or not.
    ``flag`` options take no value and set ``flag_value``."""

    dest: str
    convert: Callable[[str], Any] | None = None
    multiple: bool = False
    flag_value: Any = None


ROOT: dict[str, Opt] = {
    "--debug": Opt("debug", flag_value=True),
    "--attempts": Opt("attempts", lambda v: _integer(v, 1)),
    "--timeout": Opt("timeout", _decimal),
}
#: The root options' environment variables and defaults (kresume.cli.typer_app._root).
ROOT_ENV = {"debug": ("KRESUME_DEBUG", False), "attempts": ("KRESUME_ATTEMPTS", 3), "timeout": ("KRESUME_TIMEOUT", 30.0)}


@dataclass(frozen=True)
class Command:
    """A subcommand the fast path runs: its positional parameters, options, option environment variables
    (parameter → (variable, converter)), and the body (:mod:`kresume.cli.oneshot`) taking them by name."""

    positionals: tuple[tuple[str, Callable[[str], Any]], ...]
    options: dict[str, Opt]
    env: dict[str, tuple[str, Callable[[str], Any]]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


_STORAGE = Opt("storage_option", str, multiple=True)
COMMANDS: dict[str, Command] = {
    "restore": Command(
        positionals=(("url", str), ("dest", Path)),
        options={"--storage-option": _STORAGE, "-o": _STORAGE,
                 "--checkpoint": Opt("checkpoint", str), "-c": Opt("checkpoint", str),
                 "--progress": Opt("progress", flag_value=True), "--no-progress": Opt("progress", flag_value=False),
                 "--rank": Opt("rank", lambda v: _integer(v, 0)),
                 "--progress-every": Opt("progress_every", _decimal),
                 "--cache-dir": Opt("cache_dir", Path), "--result-file": Opt("result_file", Path)},
        env={"cache_dir": ("KRESUME_CACHE_DIR", Path)},
        defaults={"storage_option": None, "checkpoint": None, "progress": None, "rank": None, "progress_every": None,
                  "cache_dir": None, "result_file": None}),
    "latest": Command(
        positionals=(("url", str),),
        options={"--storage-option": _STORAGE, "-o": _STORAGE, "--json": Opt("as_json", flag_value=True)},
        defaults={"storage_option": None, "as_json": False}),
}


@dataclass(frozen=True)
class Call:
    """A parsed command line: the subcommand, its parameters by name, and the root options."""

    command: str
    params: dict[str, Any]
    debug: bool
    attempts: int
    timeout: float


def _take(tokens: list[str], i: int, opts: Mapping[str, Opt], out: dict[str, Any]) -> int | None:
    """Read the option at ``tokens[i]`` into ``out``; the index after it, or ``None`` to give up."""
    token = tokens[i]
    name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
    opt = opts.get(name)
    if opt is None:
        return None
    if opt.convert is None:  # a flag
        if eq or opt.dest in out:
            return None
        out[opt.dest] = opt.flag_value
        return i + 1
    if eq:
        raw, nxt = inline, i + 1
    elif i + 1 < len(tokens):
        raw, nxt = tokens[i + 1], i + 2
    else:
        return None
    if raw.startswith("-") or (opt.dest in out and not opt.multiple):
        return None
    value = opt.convert(raw)
    if value is None:
        return None
    if opt.multiple:
        out.setdefault(opt.dest, []).append(value)
    else:
        out[opt.dest] = value
    return nxt


def _from_env(env: Mapping[str, str], name: str, convert: Callable[[str], Any]) -> tuple[bool, Any]:
    """``(ok, value)`` of environment variable ``name`` (``value`` is ``None`` when unset or empty)."""
    raw = env.get(name)
    if not raw:
        return True, None
    value = convert(raw)
    return value is not None, value


def _boolean(text: str) -> bool | None:
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def parse(argv: list[str], env: Mapping[str, str] = os.environ) -> Call | None:
    """The :class:`Call` for ``argv`` (the arguments after ``kresume``), or ``None`` when the typer app must
    parse it (module doc). Pure: reads ``env``, changes nothing."""
    root: dict[str, Any] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        nxt = _take(argv, i, ROOT, root)
        if nxt is None:
            return None
        i = nxt
    if i >= len(argv) or argv[i] not in COMMANDS:
        return None
    name = argv[i]
    command = COMMANDS[name]
    params: dict[str, Any] = {}
    positional: list[str] = []
    i += 1
    while i < len(argv):
        token = argv[i]
        if token.startswith("-") and token != "-":
            nxt = _take(argv, i, command.options, params)
            if nxt is None:
                return None
            i = nxt
        else:
            positional.append(token)
            i += 1
    if len(positional) != len(command.positionals):
        return None
    for (dest, convert), raw in zip(command.positionals, positional, strict=True):
        params[dest] = convert(raw)
    for dest, (var, convert) in command.env.items():
        if dest not in params:
            ok, value = _from_env(env, var, convert)
            if not ok:
                return None
            params[dest] = value
    if params.get("storage_option") is not None:
        from kresume.cli.session import OptionError, parse_storage_options

        try:
            parse_storage_options(params["storage_option"])
        except OptionError:
            return None
    for dest, default in command.defaults.items():
        params.setdefault(dest, default)
    for dest, (var, default) in ROOT_ENV.items():
        if dest not in root:
            convert = _boolean if dest == "debug" else ROOT[f"--{dest}"].convert
            ok, value = _from_env(env, var, convert)  # type: ignore[arg-type]
            if not ok:
                return None
            root[dest] = default if value is None else value
    return Call(name, params, bool(root["debug"]), int(root["attempts"]), float(root["timeout"]))


def run(call: Call) -> NoReturn:
    """Run a parsed command as the typer app would (:func:`kresume.cli.main`): root options applied, the body
    of :mod:`kresume.cli.oneshot`, a ``StoreError`` printed as one line with its exit code (raised with
    ``--debug``), Ctrl-C as click's ``Aborted!`` (exit 1); then :func:`~kresume.store.deadline.exit_now`."""
    from kresume.cli import oneshot, session
    from kresume.store import errors
    from kresume.store.deadline import exit_now

    session.configure(call.debug, call.attempts, call.timeout)
    code = 0
    try:
        getattr(oneshot, call.command)(**call.params)
    except errors.StoreError as exc:
        if os.environ.get("KRESUME_DEBUG") in ("1", "true"):
            raise
        print(f"kresume: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        print("Aborted!", file=sys.stderr)
        code = 1
    finally:
        session.end_command()
    exit_now(code)
