"""Images for the real node, made without a registry: the pause image here; kresume's and the trainer's in
:mod:`kresume.devtools.kubelet.build`.

Every archive is an OCI image layout packed as a tar (what ``ctr images import`` reads), cached under
``<cache>/images/<name>-<key>.tar`` where ``key`` hashes the inputs, so an unchanged input never rebuilds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kresume.devtools.kubelet.configs import SANDBOX_IMAGE


class ImageBuildError(RuntimeError):
    """An image build step failed; the message names the step and has its output tail."""


@dataclass(frozen=True)
class Archive:
    """A built image: ``ref`` (``repo:tag`` pods use), ``path`` (OCI archive), ``key`` (hash of its inputs)."""

    ref: str
    path: Path
    key: str


def file_key(*paths: Path, extra: str = "") -> str:
    """16 hex digits of SHA-256 over the contents of ``paths`` (in order) and ``extra``."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run(step: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run one build step; raises :class:`ImageBuildError` naming ``step`` with the last 30 lines of output."""
    res = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-30:])
        raise ImageBuildError(f"{step}: `{' '.join(argv[:4])} …` exited {res.returncode}:\n{tail}")
    return res


BUSYBOX = Path("/bin/busybox")
"""Debian's ``busybox-static``: one static binary, the whole userland of :func:`busybox_image`."""
BUSYBOX_IMAGE = "kresume.local/busybox:1"


def _one_binary_image(step: str, binary: Path, cache: Path, ref: str, key: str,
                      setup: list[tuple[str, str]], config: list[str]) -> Archive:  # fmt: skip
    """An image of one static ``binary`` (copied to ``setup``'s first path; more entries are symlinks
    ``(link, target)``) with umoci ``config`` flags; cached as ``<cache>/images/<step>-<key>.tar``."""
    out = cache / "images" / f"{step}-{key}.tar"
    if out.exists():
        return Archive(ref, out, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = ref.rsplit(":", 1)[1]
    with tempfile.TemporaryDirectory(prefix=f"kresume-{step}-", dir=out.parent) as tmp:
        layout, bundle = Path(tmp) / "oci", Path(tmp) / "bundle"
        image = f"{layout}:{tag}"  # umoci's --image LAYOUT:TAG
        run("umoci init", ["umoci", "init", "--layout", str(layout)])
        run("umoci new", ["umoci", "new", "--image", image])
        run("umoci unpack", ["umoci", "unpack", "--rootless", "--image", image, str(bundle)])
        rootfs = bundle / "rootfs"
        dest = rootfs / setup[0][0].lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, dest)
        for link, target in setup[1:]:
            path = rootfs / link.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        for d in ("tmp", "etc", "proc", "sys", "dev"):
            (rootfs / d).mkdir(exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        run("umoci repack", ["umoci", "repack", "--image", image, str(bundle)])
        run("umoci config", ["umoci", "config", "--image", image, *config])
        run("umoci gc", ["umoci", "gc", "--layout", str(layout)])
        run("tar", ["tar", "-C", str(layout), "-cf", f"{out}.tmp", "."])
        Path(f"{out}.tmp").rename(out)
    return Archive(ref, out, key)


def busybox_image(cache: Path, binary: Path = BUSYBOX) -> Archive:
    """:data:`BUSYBOX_IMAGE`: ``/bin/busybox`` with ``/bin/sh`` and the usual applets as links; for tests that
    need a shell in a container."""
    applets = ("sh", "echo", "sleep", "cat", "ls", "id", "true", "false", "test", "wget", "touch", "env", "kill")
    return _one_binary_image("busybox", binary, cache, BUSYBOX_IMAGE, file_key(binary, extra="busybox-v1"),
                             [("/bin/busybox", "")] + [(f"/bin/{a}", "busybox") for a in applets],
                             ["--config.cmd", "/bin/sh", "--config.env", "PATH=/bin"])  # fmt: skip


def pause_image(pause_binary: Path, cache: Path) -> Archive:
    """The sandbox image :data:`SANDBOX_IMAGE`: one file, the static ``pause`` that ``scripts/k8s-assets.sh
    --node`` compiles from the Kubernetes source tree, as entrypoint, user 65535 (as upstream's image)."""
    return _one_binary_image("pause", pause_binary, cache, SANDBOX_IMAGE, file_key(pause_binary, extra="pause-v1"),
                             [("/pause", "")], ["--config.entrypoint", "/pause", "--config.user", "65535:65535"])
