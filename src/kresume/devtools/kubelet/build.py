"""kresume's image and the demo trainer's, built from their Dockerfiles without a registry, cached by inputs.

1. **Base** (:func:`base_image`): ``mmdebstrap --variant=minbase bookworm`` with python3 (3.11), venv, pip and
   ``python-is-python3`` from the Debian mirror apt uses, committed by buildah as :data:`BASE_REF`; it stands in
   for ``python:3.11-slim-bookworm`` (the Dockerfiles' ``PYTHON_IMAGE`` default on a machine with a registry).
2. **kresume** (:func:`kresume_image`): the repository's ``Dockerfile`` with ``PYTHON_IMAGE=`` the base and
   ``BUILD_PACKAGES=`` empty (every dependency has an x86_64 wheel); Python packages from the package index.
3. **trainer** (:func:`trainer_image`): ``examples/lightning/Dockerfile``: torch 2.13.0 CPU from the machine's
   wheel folder (mounted read-only at ``/wheels``), Lightning, kresume, ``/app/train.py``.

The trainer is built with ``buildah bud --layers`` (intermediate layers kept in a private containers-storage
under the cache), so a change to ``src/`` rebuilds only the steps after ``ARG SOURCE_KEY``; kresume's image is
built without the layer cache (buildah 1.28 reused a ``RUN pip wheel .`` after a changed ``COPY src``). Each image is exported as an OCI archive
``<cache>/images/<name>-<key>.tar``; ``key`` hashes every input file (the Dockerfile, pyproject.toml, README.md,
src/, the entrypoints, train.py) and the base's key, so an unchanged tree never rebuilds and a changed one always
does. Pods use the fixed tags (:data:`KRESUME_REF`, :data:`TRAINER_REF`) with ``imagePullPolicy: IfNotPresent``;
the node imports an archive only when containerd's copy carries another key (:meth:`RealNode.ensure_image`).
Measured here (cold, 2 cores): base ~90 s, kresume ~2 min, trainer ~2 min; warm: 0 s.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kresume.devtools.kubelet.images import Archive, ImageBuildError, run

REPO = Path(__file__).resolve().parents[4]
BASE_REF = "kresume.local/python:3.11-bookworm"
KRESUME_REF = "kresume.local/kresume:dev"
TRAINER_REF = "kresume.local/trainer:dev"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
"""What the local base adds to Debian's minbase (``python:3.11-slim`` has the same pieces)."""
WHEELS_ENV = "KRESUME_TORCH_WHEELS"
"""Folder holding the torch 2.13.0 CPU wheel for the trainer image (default: pip's ``find-links`` here,
``/opt/wheels``)."""
_BASE_RECIPE = "v1:minbase:bookworm:" + ",".join(BASE_PACKAGES)


@dataclass(frozen=True)
class Buildah:
    """buildah with a private storage (``root`` in the cache, ``runroot`` in /run)."""

    root: Path
    runroot: Path

    def argv(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "overlay",
                *args]  # fmt: skip

    def run(self, step: str, *args: str, timeout: float = 1800) -> str:
        return run(step, self.argv(*args), timeout=timeout).stdout

    def has(self, ref: str) -> bool:
        res = subprocess.run(self.argv("inspect", "--type", "image", ref), capture_output=True, check=False)
        return res.returncode == 0


def tree_key(paths: Iterable[Path], *, extra: str = "", root: Path = REPO) -> str:
    """16 hex digits of SHA-256 over ``extra`` and, for every file under ``paths`` (files or folders, sorted,
    ``__pycache__`` and ``*.pyc`` skipped), its path relative to ``root``, mode bit x and contents."""
    h = hashlib.sha256(extra.encode())
    files: list[Path] = []
    for p in paths:
        files += [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    for f in sorted(set(files)):
        if "__pycache__" in f.parts or f.suffix == ".pyc":
            continue
        h.update(str(f.relative_to(root)).encode() + b"\0" + str(os.access(f, os.X_OK)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _buildah(cache: Path) -> Buildah:
    return Buildah(cache / "buildah", Path("/run/kresume-buildah"))


def base_image(cache: Path, log: Path | None = None) -> str:
    """Make :data:`BASE_REF` in the private storage unless it is there; returns its key."""
    try:
        return _base_image(cache, log)
    finally:
        shutil.rmtree(_buildah(cache).runroot, ignore_errors=True)  # buildah's run state (locks)


def _base_image(cache: Path, log: Path | None) -> str:
    b = _buildah(cache)
    key = hashlib.sha256(_BASE_RECIPE.encode()).hexdigest()[:16]
    stamp = cache / "images" / f"base-{key}.done"
    if stamp.exists() and b.has(BASE_REF):
        return key
    shutil.which("mmdebstrap") or _missing("mmdebstrap")
    tar = cache / "images" / f"base-{key}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    if not tar.exists():
        _say(log, f"mmdebstrap --variant=minbase bookworm + {' '.join(BASE_PACKAGES)} (~90 s)")
        run("mmdebstrap", [
            "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            "--aptopt=Apt::Install-Recommends \"false\"", "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
            # No mirror: the host's apt sources. The format is named: from the ".tmp" suffix mmdebstrap
            # would make a folder (measured on a cold cache).
            "--format=tar", "bookworm", f"{tar}.tmp",
        ], timeout=1800)  # fmt: skip
        Path(f"{tar}.tmp").rename(tar)
    ctr = b.run("buildah from scratch", "from", "scratch").strip()
    try:
        b.run("buildah add", "add", ctr, str(tar), "/")
        b.run("buildah config", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "--env", "LANG=C.UTF-8", "--cmd", "python3", ctr)  # fmt: skip
        b.run("buildah commit", "commit", "--rm", ctr, BASE_REF)
    except BaseException:
        subprocess.run(b.argv("rm", ctr), capture_output=True, check=False)
        raise
    tar.unlink()  # the image is in the storage now
    stamp.write_text(BASE_REF + "\n")
    return key


def dockerfile_image(cache: Path, *, name: str, ref: str, dockerfile: Path, inputs: Iterable[Path],
                     build_args: dict[str, str], volumes: tuple[str, ...] = (), key_extra: str = "",
                     layers: bool = False, log: Path | None = None) -> Archive:  # fmt: skip
    """Build ``dockerfile`` (context: the repository) on the local base as ``ref`` and export it to an OCI archive,
    unless the archive for these inputs exists. Raises :class:`ImageBuildError`."""
    base_key = base_image(cache, log)
    key = tree_key([dockerfile, *inputs], extra=f"{name}:{base_key}:{sorted(build_args.items())}:{key_extra}")
    out = cache / "images" / f"{name}-{key}.tar"
    if out.exists():
        return Archive(ref, out, key)
    b = _buildah(cache)
    t0 = time.monotonic()
    _say(log, f"building {ref} from {dockerfile.relative_to(REPO)} with buildah")
    # buildah 1.28's layer cache reused a `RUN pip wheel .` after a changed `COPY src` (measured: a stale kresume
    # in the image): layers are only kept where the Dockerfile busts them with SOURCE_KEY (``layers``).
    args = ["bud", f"--layers={'true' if layers else 'false'}", "--pull-never", "--network", "host", "--isolation", "chroot", "-f", str(dockerfile),
            "-t", ref, "--build-arg", f"PYTHON_IMAGE={BASE_REF}"]  # fmt: skip
    for k, v in {**build_args, "SOURCE_KEY": key}.items():
        args += ["--build-arg", f"{k}={v}"]
    for v in (*host_trust(), *volumes):
        args += ["--volume", v]
    try:
        b.run(f"build {name}", *args, str(REPO), timeout=3600)
    finally:
        shutil.rmtree(b.runroot, ignore_errors=True)  # buildah's run state (locks); the storage root stays
    for old in out.parent.glob(f"{name}-*.tar"):
        old.unlink()
    b.run(f"export {name}", "push", ref, f"oci-archive:{out}.tmp:{ref}")
    Path(f"{out}.tmp").rename(out)
    _say(log, f"built {ref} in {time.monotonic() - t0:.0f} s ({out.stat().st_size / 2**20:.0f} MiB)")
    return Archive(ref, out, key)


HOST_TRUST = (Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pip.conf"))
"""Mounted read-only into every RUN step when present: the machine's CA bundle and pip's global config (which
names it), so a build behind an intercepting proxy trusts what the host trusts. Nothing of it stays in the image."""


def host_trust() -> list[str]:
    """``--volume`` values for :data:`HOST_TRUST`."""
    return [f"{p}:{p}:ro" for p in HOST_TRUST if p.is_file()]


def kresume_image(cache: Path, log: Path | None = None) -> Archive:
    """kresume's image (operator, sidecar, restore) from the repository's ``Dockerfile``."""
    return dockerfile_image(cache, name="kresume", ref=KRESUME_REF, dockerfile=REPO / "Dockerfile", inputs=[
        REPO / "pyproject.toml", REPO / "README.md", REPO / "src", REPO / "operator" / "entrypoint.sh",
        REPO / "sidecar" / "entrypoint.sh"], build_args={"BUILD_PACKAGES": ""}, log=log)  # fmt: skip


def torch_wheels() -> Path:
    """The folder with the torch 2.13.0 CPU wheel (``$KRESUME_TORCH_WHEELS``, else ``/opt/wheels``)."""
    d = Path(os.environ.get(WHEELS_ENV) or "/opt/wheels")
    if not list(d.glob("torch-2.13.0*.whl")):
        raise ImageBuildError(f"no torch-2.13.0 wheel in {d}: set {WHEELS_ENV} to a folder holding the CPU wheel "
                              "(pip download torch==2.13.0 from PyTorch's CPU index)")
    return d


def trainer_image(cache: Path, log: Path | None = None) -> Archive:
    """The demo trainer's image from ``examples/lightning/Dockerfile`` (torch from :func:`torch_wheels`)."""
    wheels = torch_wheels()
    wheel = sorted(wheels.glob("torch-2.13.0*.whl"))[0].name
    return dockerfile_image(cache, name="trainer", ref=TRAINER_REF,
                            dockerfile=REPO / "examples" / "lightning" / "Dockerfile",
                            inputs=[REPO / "pyproject.toml", REPO / "README.md", REPO / "src",
                                    REPO / "examples" / "lightning" / "train.py"],
                            build_args={"TORCH_PIP_ARGS": "--find-links /wheels"},
                            volumes=(f"{wheels}:/wheels:ro",), key_extra=wheel, layers=True, log=log)  # fmt: skip


def _missing(exe: str) -> None:
    raise ImageBuildError(f"{exe} is not installed: run `scripts/k8s-assets.sh --node` (apt) as root")


def _say(log: Path | None, text: str) -> None:
    line = f"[build-images {time.strftime('%H:%M:%S')}] {text}"
    if log is None:
        print(line, flush=True)
    else:
        with open(log, "a") as f:
            f.write(line + "\n")


def main() -> None:
    """``python -m kresume.devtools.kubelet.build [kresume|trainer|all]``: build (or find cached) and print paths."""
    import sys

    from kresume.devtools.kubelet.node import default_cache

    which = sys.argv[1:] or ["all"]
    cache = default_cache()
    try:
        if which[0] in ("kresume", "all"):
            a = kresume_image(cache)
            print(f"{a.ref} {a.path}")
        if which[0] in ("trainer", "all"):
            a = trainer_image(cache)
            print(f"{a.ref} {a.path}")
    except ImageBuildError as exc:
        sys.exit(f"build-images: {exc}")


if __name__ == "__main__":
    main()
