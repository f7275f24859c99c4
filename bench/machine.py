"""What the benchmark ran on: cores, memory, disk, load, tool versions (for RESULTS.md)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import psutil


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return "missing"
    return out.strip().splitlines()[0] if out.strip() else "?"


def describe(workdir: str, tools: dict[str, str]) -> dict[str, str]:
    """Facts about this machine and run, as ``name → text``; ``tools`` maps tool name → executable."""
    disk = shutil.disk_usage(workdir)
    load = os.getloadavg()
    import fsspec
    import s3fs

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "disk": f"{workdir}: {disk.total / 2**30:.0f} GiB, {disk.free / 2**30:.0f} GiB free",
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load),
        "python": sys.version.split()[0],
        "fsspec / s3fs": f"{fsspec.__version__} / {s3fs.__version__}",
        **{name: _version([exe, "version"] if name != "rclone" else [exe, "version"]) for name, exe in tools.items()},
    }


def load_now() -> str:
    """The 1-minute load average now, formatted."""
    return f"{os.getloadavg()[0]:.2f}"
