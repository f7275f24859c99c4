"""Upload and restore rows: kresume vs s5cmd, rclone and naive fsspec, plus ``cp`` as the disk ceiling.

Tools run in alternating order (forward on even rounds, reversed on odd ones) so drift in machine
load hits every tool alike; each tool's median over ``repeats`` rounds is reported. Only round 0's
uploads are kept (the restores read them); later rounds' objects are deleted and SeaweedFS is
vacuumed between rounds, so a 1 GB x 5 x 4-tool run does not fill the disk.
"""

from __future__ import annotations

import contextlib
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench import peers as peers_mod
from bench import procs
from bench.report import ToolResult, TransferRow
from bench.servers import BUCKET, Target

Log = Callable[[str], None]


def _order(items: list[str], round_no: int) -> list[str]:
    return items if round_no % 2 == 0 else list(reversed(items))


def _payload(src: Path) -> int:
    if src.is_file():
        return src.stat().st_size
    return sum(p.stat().st_size for p in src.rglob("*") if p.is_file())


def _vacuum(target: Target) -> None:
    """Ask SeaweedFS's master to compact volumes now (deleted objects free their disk space)."""
    proc = getattr(target.server, "_proc", None)
    argv = list(getattr(proc, "argv", []) or [])
    port = next((a.split("=", 1)[1] for a in argv if str(a).startswith("-master.port=")), None)
    if port is None:
        return
    with contextlib.suppress(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/vol/vacuum?garbageThreshold=0.0001", timeout=120).read()


def _delete(target: Target, tool: str, tag: str) -> None:
    fs = target.filesystem()
    with contextlib.suppress(FileNotFoundError):
        fs.rm(f"{BUCKET}/{tool}/{tag}", recursive=True)
    fs.invalidate_cache()


DIRECTIONS = ("upload", "restore")
"""Transfer directions ``measure`` can report (``--direction``)."""


def measure(target: Target, src: Path, label: str, tools: list[str], repeats: int, work: Path,
            log: Log = print, directions: tuple[str, ...] = DIRECTIONS) -> list[TransferRow]:
    """Upload ``src`` with every tool ``repeats`` times, then download it back as many times.

    Returns the rows of ``directions`` (upload, then restore); ``cp`` (when in ``tools``) is the
    local-disk ceiling and appears in each. Restore-only runs still upload once per tool (round 0,
    not reported: the restores read it). Raises ``procs.CommandFailed`` when a tool fails (the bench
    must not hide it).
    """
    nbytes = _payload(src)
    up = {t: ToolResult(t, nbytes) for t in tools}
    down = {t: ToolResult(t, nbytes) for t in tools if t != "cp"}
    env = target.env
    # The row's label names it in the table ("file 8 MB"); the store keys use it without spaces, since kresume
    # refuses URLs with whitespace (kresume.store.urls).
    key = label.replace(" ", "-")
    upload_rounds = repeats if "upload" in directions else 1
    restore_rounds = repeats if "restore" in directions else 0
    for rnd in range(upload_rounds):
        for tool in _order(tools, rnd):
            tag = f"{key}-{rnd}"
            if tool == "cp":
                dest = work / "cp-dest"
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                up[tool].samples.append(procs.run(peers_mod.cp_command(src, dest)))
                shutil.rmtree(dest, ignore_errors=True)
            else:
                up[tool].samples.append(procs.run(peers_mod.Peer(tool).upload(target, src, tag), env=env))
                if rnd:
                    _delete(target, tool, tag)
            log(f"  {target.name} upload {label} round {rnd} {tool}: {up[tool].samples[-1].seconds:.2f} s")
        _vacuum(target)
    for rnd in range(restore_rounds):
        for tool in _order(list(down), rnd):
            dest = work / f"dl-{tool}"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            down[tool].samples.append(
                procs.run(peers_mod.Peer(tool).download(target, src, f"{key}-0", dest), env=env))
            _check_download(dest / src.name, nbytes, tool)
            shutil.rmtree(dest, ignore_errors=True)
            log(f"  {target.name} restore {label} round {rnd} {tool}: {down[tool].samples[-1].seconds:.2f} s")
    for tool in down:
        _delete(target, tool, f"{key}-0")
    _vacuum(target)
    ceiling = {"cp": up["cp"]} if "cp" in up else {}
    rows = {"upload": TransferRow(f"upload {label}", target.name, up),
            "restore": TransferRow(f"restore {label}", target.name, {**down, **ceiling})}
    return [rows[d] for d in DIRECTIONS if d in directions]


def _check_download(path: Path, nbytes: int, tool: str) -> None:
    got = _payload(path) if path.exists() else -1
    if got != nbytes:
        raise procs.CommandFailed(f"{tool} download of {path.name} has {got} B, expected {nbytes} B")
