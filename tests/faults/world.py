"""The real parts one campaign runs on, started on first use and stopped by :meth:`World.close`.

- a moto S3 server of the campaign's own (freezing a shared one would stall other tests) and the fault proxy
  in front of it (:mod:`_fixtures.faultproxy`): the sidecar and the operator talk to the proxy, the checks
  to moto directly (the truth);
- for the Kubernetes faults, a control plane (the caller's, e.g. pytest's session ``control_plane``, or one
  of its own: etcd + kube-apiserver + controller-manager) with kresume's CRDs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _fixtures.faultproxy import FaultProxy
from kresume.devtools import objstores
from kresume.store.runstore import RunStore
from kresume.store.storage import TransferSettings

BUCKET = "kresume-faults"


@dataclass
class Run:
    """One fresh run prefix: ``url`` (trailing slash), ``options`` (through the proxy), ``truth`` (direct)."""

    url: str
    options: dict[str, Any]
    direct_options: dict[str, Any]
    truth: RunStore

    def faulty(self, settings: TransferSettings | None = None) -> RunStore:
        """A store of this run through the proxy (what kresume's code sees)."""
        return RunStore.open(self.url, self.options, settings=settings)


class World:
    """Servers for a campaign; ``workdir`` holds their logs and every session's files."""

    def __init__(self, workdir: Path, control_plane: Any = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._moto: objstores.ObjectStoreServer | None = None
        self._proxy: FaultProxy | None = None
        self._plane = control_plane
        self._own_plane: Any = None
        self._crds = False
        self._prefixes: list[str] = []

    # ------------------------------------------------------------------ store
    @property
    def moto(self) -> objstores.ObjectStoreServer:
        if self._moto is None:
            server = objstores.SERVERS["s3-moto"](tmp_root=self.workdir)
            server.start()
            try:
                server.create_bucket(BUCKET)
            except BaseException:
                server.stop()
                raise
            self._moto = server
        return self._moto

    @property
    def proxy(self) -> FaultProxy:
        if self._proxy is None:
            self._proxy = FaultProxy(self.moto.endpoint).start()
        return self._proxy

    def prefix(self, tag: str) -> str:
        """A fresh ``s3://kresume-faults/<tag>-<random>`` base, removed by :meth:`forget_runs`."""
        url = self.moto.url(BUCKET, f"{tag}-{uuid.uuid4().hex[:8]}")
        self._prefixes.append(url)
        return url

    def forget_runs(self) -> None:
        """Delete every prefix handed out so far (moto keeps objects in memory: a long campaign would fill it)."""
        fs = self.moto.filesystem()
        for url in self._prefixes:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(url.split("://", 1)[1], recursive=True)
        self._prefixes.clear()
        fs.invalidate_cache()

    def fresh_run(self, tag: str) -> Run:
        """A run URL no other session uses (``s3://kresume-faults/<tag>-<random>/ns/run/``)."""
        url = self.prefix(tag) + "/ns/run/"
        direct = dict(self.moto.storage_options)
        return Run(url, self.proxy.storage_options(direct), direct, RunStore.open(url, direct))

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The S3 server's process group stopped (SIGSTOP) inside the block, continued (SIGCONT) after it."""
        os.killpg(self.moto.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.moto.pid, signal.SIGCONT)

    def freeze_for(self, seconds: float) -> None:
        with self.frozen():
            time.sleep(seconds)

    # ------------------------------------------------------------------ Kubernetes
    @property
    def plane(self) -> Any:
        """The control plane (the caller's, or one started here), with kresume's CRDs Established."""
        if self._plane is None:
            from kresume.devtools.cluster import ControlPlane

            from _fixtures.cluster import SESSION_SETTINGS

            self._own_plane = ControlPlane(SESSION_SETTINGS).start()
            self._plane = self._own_plane
        if not self._crds:
            from kresume import crds

            from _fixtures.operator import apply

            for crd in crds.all_crds():
                apply(self._plane, crd)
            for crd in crds.all_crds():
                self._plane.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}",
                                    "--timeout=60s")
            self._crds = True
        return self._plane

    def close(self) -> None:
        """Stop what this world started (the caller's control plane is left running)."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._moto is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._moto.pid, signal.SIGCONT)
            self._moto.stop()
            self._moto = None
        if self._own_plane is not None:
            self._own_plane.stop()
            self._own_plane = None

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
