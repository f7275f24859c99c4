"""Open a file under a root without ever leaving it: no symlink is followed, no ``..`` accepted.

Each path component is opened relative to its parent's fd with ``O_NOFOLLOW``, so a folder swapped
for a symlink between the scan and the read (or a link planted by the trainer, e.g. to
``/etc/passwd``) fails with ``OSError(ELOOP/ENOTDIR)`` instead of being read.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat


class UnsafePath(ValueError):
    """A relative path that is absolute, empty, or contains ``.``/``..`` components."""


def split_rel(rel: str) -> list[str]:
    """Split a POSIX relative path; raise :class:`UnsafePath` for absolute, empty, ``.`` or ``..``."""
    if not rel or rel.startswith("/"):
        raise UnsafePath(f"not a relative path: {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"path {rel!r} has an empty, '.' or '..' component")
    return parts


def open_beneath(root: str, rel: str) -> int:
    """Return a read-only fd for ``root/rel``; the caller closes it.

    Raises :class:`UnsafePath` for a bad ``rel``; ``OSError`` with ``ELOOP`` (a symlink component),
    ``ENOTDIR``, ``ENOENT`` or ``EACCES`` (see :func:`unreadable_message` for the fix) otherwise.
    Regular files only: anything else raises ``OSError(EINVAL)``.
    """
    parts = split_rel(rel)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for p in parts[:-1]:
            nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    finally:
        os.close(dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file: {rel}")
    return fd


def unreadable_message(path: str, st: os.stat_result | None = None) -> str:
    """One line naming why ``path`` cannot be read and the fix (writers.md §4: HF safetensors is 0600).

    ``mkstemp`` files are 0600 whatever the umask, so an fsGroup alone does not help: the sidecar
    must run as the trainer's uid.
    """
    me = os.geteuid()
    if st is None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            st = None
    if st is None:
        return f"cannot read {path} (permission denied); run the sidecar as the trainer's uid"
    owner = _user(st.st_uid)
    return (
        f"cannot read {path}: mode {stat.S_IMODE(st.st_mode):04o} owned by uid {st.st_uid}{owner}, "
        f"sidecar runs as uid {me}; fix: run the sidecar with the trainer's uid "
        f"(securityContext.runAsUser: {st.st_uid}) — files written with mkstemp (HF safetensors) stay "
        f"0600, so a shared fsGroup is only enough for group-readable files"
    )


def _user(uid: int) -> str:
    try:
        return f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return ""
