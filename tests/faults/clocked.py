"""Run a kresume module with its wall clock stepped: ``python -m faults.clocked OFFSET_FILE MODULE [ARGS...]``
(``MODULE`` may be ``package.module:function``, e.g. ``kresume.cli:main``).

Installs a source for :mod:`kresume.store.clock` (the one place the store and the sidecar read the wall clock)
that returns the real time plus the offset in seconds written in ``OFFSET_FILE`` (re-read whenever the file
changes; absent or empty: 0), then runs ``MODULE`` as ``__main__`` with ``ARGS``. The process is otherwise the
real one (``kresume.sidecar``, ``kresume.cli``); monotonic time, the network and file mtimes are untouched, as
with a real step of the node's clock seen by a process whose files another node's clock stamps (a shared
volume). Write the file with :func:`step` (atomic rename).
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path


def step(offset_file: Path, seconds: float) -> None:
    """Set the clock offset of every process started on ``offset_file`` (atomically)."""
    tmp = offset_file.with_name(offset_file.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"{seconds}\n")
    os.replace(tmp, offset_file)


def _source(offset_file: Path):  # type: ignore[no-untyped-def]
    seen: dict[str, object] = {"key": None, "offset": 0}

    def now_ns() -> int:
        try:
            st = os.stat(offset_file)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != seen["key"]:
                text = offset_file.read_text().strip()
                seen["key"], seen["offset"] = key, int(float(text or 0) * 1e9)
        except (FileNotFoundError, ValueError):
            seen["key"], seen["offset"] = None, 0
        return time.time_ns() + int(seen["offset"])  # type: ignore[call-overload]

    return now_ns


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m faults.clocked OFFSET_FILE MODULE [ARGS...]")
    from kresume.store import clock

    clock.set_source(_source(Path(sys.argv[1])))
    module, args = sys.argv[2], sys.argv[3:]
    sys.argv = [module, *args]
    if ":" in module:
        import importlib

        name, func = module.split(":", 1)
        getattr(importlib.import_module(name), func)()
        return
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
