"""Which host paths a dev-node container needs: its executable as ``exec`` finds it, the interpreter chain of a
script (``#!``), PATH and PYTHONPATH entries, workingDir, absolute arguments.

Images are ignored on the dev node, so the host file system is the container's image: the agent must not hide
these paths when it gives the container a private ``/tmp`` (:func:`kresume.devtools.node.podspec.tmp_entries_to_keep`),
and a command that cannot be found is reported at once as ``StartError`` instead of a shell's ``exec: python: not
found``. The lookups read the host file system (thin shell over the pure rules in ``podspec``); container paths
below a volume mount are looked up in the volume's host folder (:func:`podspec.host_path`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence

from kresume.devtools.node import podspec

SHEBANG_DEPTH = 4
"""How many ``#!`` interpreters are followed (Linux allows 4 levels of interpreter scripts)."""


def _is_executable(host: str) -> bool:
    return os.path.isfile(host) and os.access(host, os.X_OK)


def resolve_command(name: str, env: Mapping[str, str], working_dir: str, binds: Sequence[podspec.Mount]) -> str | None:
    """The container path ``exec name`` runs (POSIX ``exec``: a name with ``/`` is a path, relative to
    ``working_dir``; otherwise the first executable in ``PATH``), or None when there is none."""
    if "/" in name:
        path = posixpath.normpath(posixpath.join(working_dir, name))
        return path if _is_executable(podspec.host_path(path, binds)) else None
    for entry in env.get("PATH", "").split(":"):
        if entry.startswith("/"):
            path = posixpath.join(entry, name)
            if _is_executable(podspec.host_path(path, binds)):
                return path
    return None


def interpreters(path: str, env: Mapping[str, str], working_dir: str, binds: Sequence[podspec.Mount]) -> list[str]:
    """Container paths of the ``#!`` interpreter chain of executable ``path`` (``#!/usr/bin/env python``: env
    and the ``python`` it finds on PATH); empty for a binary or an unreadable file."""
    out: list[str] = []
    current = path
    for _ in range(SHEBANG_DEPTH):
        try:
            with open(podspec.host_path(current, binds), "rb") as f:
                first = f.readline(512)
        except OSError:
            break
        if not first.startswith(b"#!"):
            break
        words = first[2:].decode("utf-8", "replace").split()
        if not words:
            break
        interpreter = words[0]
        out.append(interpreter)
        if posixpath.basename(interpreter) == "env" and len(words) > 1 and not words[1].startswith("-"):
            found = resolve_command(words[1], env, working_dir, binds)
            if found:
                out.append(found)
                interpreter = found
        current = interpreter
    return out


def _absolute_arguments(argv: Iterable[str]) -> list[str]:
    out = []
    for a in argv:
        value = a.split("=", 1)[1] if a.startswith("-") and "=" in a else a
        if value.startswith("/"):
            out.append(value)
    return out


def needed_paths(argv: Sequence[str], env: Mapping[str, str], working_dir: str | None,
                 binds: Sequence[podspec.Mount], extra: Iterable[str] = ()) -> list[str]:  # fmt: skip
    """Container paths the container needs from the host: the resolved executable and its interpreters (each also
    with symlinks resolved), PATH, PYTHONPATH and HOME entries, ``working_dir``, absolute arguments (``/x`` and
    ``--opt=/x``), and ``extra`` (the agent's own Python: ``sys.prefix`` and ``sys.path``, where an editable
    install's sources are). ``argv`` is the command line after ``$(VAR)`` expansion."""
    cwd = working_dir or "/"
    paths: list[str] = []
    command = resolve_command(argv[0], env, cwd, binds) if argv else None
    if command:
        paths += [command, *interpreters(command, env, cwd, binds)]
    paths += [p for key in ("PATH", "PYTHONPATH") for p in env.get(key, "").split(":")]
    paths += [env.get("HOME", ""), working_dir or "", *_absolute_arguments(argv[1:]), *extra]
    paths = [p for p in paths if p.startswith("/")]
    return paths + [os.path.realpath(p) for p in paths if os.path.lexists(p)]
