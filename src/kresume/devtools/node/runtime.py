"""Processes of the local node agent: one container = one process group, optionally in a private mount namespace.

A container runs as ``setpriv --pdeathsig KILL -- unshare --mount --propagation private -- sh -c <binds>
"$@"`` (util-linux), so its ``volumeMounts`` appear at their ``mountPath`` for that process tree only and
vanish with it; the host only gains empty mount-point folders, which :class:`MountPoints` creates and removes.
Without root (no mount namespaces) containers run directly and a ``volumeMount`` is refused.

No process is left behind: each container is its own session (``killpg`` reaches its children),
``PR_SET_PDEATHSIG`` kills it if the spawning thread dies (so every spawn happens on one long-lived
:class:`Spawner` thread, not on short-lived pod threads: Linux ties the signal to the *thread*), and
:func:`kill_all` runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from kresume.devtools.node import podspec

_LIVE: weakref.WeakSet[ContainerProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def exit_code(returncode: int) -> int:
    """Popen's returncode as a container exit code: a death by signal N is ``128 + N`` (shells, kubelet)."""
    return 128 - returncode if returncode < 0 else returncode


class Spawner:
    """Runs every ``Popen`` on one long-lived thread (pdeathsig is per thread; see module docstring)."""

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[dict, concurrent.futures.Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kresume-node-spawner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            kwargs, fut = item
            try:
                fut.set_result(subprocess.Popen(**kwargs))  # noqa: S603 - argv from the pod spec by design
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    def popen(self, **kwargs: object) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(**kwargs)`` on the spawner thread; raises what Popen raises."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._q.put((dict(kwargs), fut))
        return fut.result()

    def close(self) -> None:
        """Stop the thread (after every container is gone: their pdeathsig fires when it exits)."""
        self._q.put(None)
        self._thread.join(5)


class MountPoints:
    """Reference-counted host folders used as mount points; removed when the last user ends, if empty
    and if this agent created them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}
        self._created: set[str] = set()

    def acquire(self, target: str, is_file: bool) -> None:
        """Make sure ``target`` exists on the host (a folder, or an empty file for a file mount)."""
        with self._lock:
            p = Path(target)
            if not p.exists():
                missing = [q for q in [p, *p.parents] if not q.exists()]
                if is_file:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch()
                else:
                    p.mkdir(parents=True, exist_ok=True)
                self._created.update(str(q) for q in missing)
            self._users[target] = self._users.get(target, 0) + 1

    def release(self, target: str) -> None:
        """Drop one user; remove the folders this agent created (deepest first) once unused and empty."""
        with self._lock:
            self._users[target] = self._users.get(target, 1) - 1
            if self._users[target] > 0:
                return
            del self._users[target]
            for q in [Path(target), *Path(target).parents]:
                if str(q) not in self._created or any(u == str(q) or u.startswith(f"{q}/") for u in self._users):
                    break
                with contextlib.suppress(OSError):
                    q.unlink() if q.is_file() else q.rmdir()
                    self._created.discard(str(q))


class ContainerProcess:
    """One running container: its process group, log file and exit status.

    ``start`` raises OSError when the process cannot be spawned. ``returncode``/``exit_code`` are None
    while it runs.
    """

    def __init__(self, spawner: Spawner, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path) -> None:  # fmt: skip
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        wrap = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        with open(log_path, "ab") as out:
            self.popen = spawner.popen(
                args=[*wrap, *argv], env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pid = self.popen.pid
        self.started = time.time()
        with _LIVE_LOCK:
            _LIVE.add(self)

    def poll(self) -> int | None:
        """Container exit code (``128+signal`` for a signal) or None while running."""
        rc = self.popen.poll()
        if rc is not None:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            self._reap_group()
            return exit_code(rc)
        return None

    def terminate(self) -> None:
        """SIGTERM the container's main process (kubelet signals PID 1 only, not the whole group)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group (kubelet kills the container's cgroup)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _reap_group(self) -> None:
        # Children that outlive PID 1 die with the container, as in a real pod's PID namespace.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s; return the exit code or None."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.poll()


def container_argv(command: list[str], binds: list[podspec.Mount], working_dir: str | None,
                   mount_namespace: bool, private_tmp: podspec.PrivateTmp | None = None) -> list[str]:  # fmt: skip
    """The argv that runs ``command`` with ``binds`` (and ``private_tmp``) applied inside a private mount namespace.

    Without ``mount_namespace`` only ``working_dir`` is applied (via ``sh -c``); ``binds`` must be empty and
    ``private_tmp`` None.
    """
    script = podspec.mount_script(binds, working_dir, private_tmp)
    if mount_namespace:
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
                "kresume-container", *command]  # fmt: skip
    assert not binds and private_tmp is None, "volume mounts and a private /tmp need a mount namespace"
    return ["/bin/sh", "-c", script, "kresume-container", *command]


@atexit.register
def kill_all() -> None:
    """SIGKILL every container process group still alive (interpreter exit, Ctrl-C)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        proc.kill()
