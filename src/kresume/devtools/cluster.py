"""A real local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager), envtest style.

No kubelet, and no scheduler unless ``ControlPlaneSettings.scheduler``: pods stay Pending unless something binds
them (``spec.nodeName`` or ``pods/binding``) and reports their status (the node agent, :mod:`kresume.devtools.node`),
or a real kubelet runs them (:mod:`kresume.devtools.localcluster`). :meth:`ControlPlane.restart_apiserver` restarts
the API server on the same etcd (fault tests). The controller-manager makes Jobs create Pods, collects garbage and
deletes namespaces. Flags follow ``../shared/k8s/envtest.sh`` (measured there: cold start to ``/readyz`` 4-6 s,
RSS about 385 MB apiserver + 50 MB etcd + 95 MB controller-manager).

Binaries come from ``$KUBEBUILDER_ASSETS`` (controller-runtime's envtest convention) or ``<repo>/.cache/k8s/bin``;
``scripts/k8s-assets.sh`` puts them there. Typical use::

    with ControlPlane() as cp:
        cp.kubectl("get", "ns")
        v1 = kubernetes.client.CoreV1Api(cp.api_client())

Cleanup: ``stop()`` (also run by ``__exit__`` and ``atexit``) terminates each process group, SIGKILLs after
``stop_timeout`` and removes the work directory. Children are :class:`~kresume.devtools._procs.ManagedProcess`es
with ``PR_SET_PDEATHSIG=SIGKILL``, so they die with the Python thread that started them even on SIGKILL; start the plane from a
thread that outlives it (the main thread in pytest). Work directories of dead owners are swept on the next start.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kresume.devtools import _procs, pki

ASSETS_ENV = "KUBEBUILDER_ASSETS"
ASSETS_COMMAND = "scripts/k8s-assets.sh"
REPO_ASSETS_DIR = Path(__file__).resolve().parents[3] / ".cache" / "k8s" / "bin"
_WORKDIR_PREFIX = "kresume-cp-"
_NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


class AssetsMissingError(FileNotFoundError):
    """A control-plane binary is missing; the message names the directory and the command that fetches it."""


class ControlPlaneError(RuntimeError):
    """A control-plane process failed or did not become ready; the message carries the tail of its log."""


class KubectlError(subprocess.CalledProcessError):
    """``kubectl`` exited non-zero; ``str()`` shows the command line and kubectl's stderr."""

    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[3:])} exited {self.returncode}: {(self.stderr or '').strip()}"


@dataclass(frozen=True)
class ControlPlaneSettings:
    """How to start a :class:`ControlPlane`. Times are seconds."""

    assets_dir: Path | None = None
    """Directory with etcd, kube-apiserver, kube-controller-manager, kubectl; None: ``$KUBEBUILDER_ASSETS``, else
    ``<repo>/.cache/k8s/bin``."""
    controller_manager: bool = True
    """Run kube-controller-manager (Jobs -> Pods, garbage collection, namespace deletion, default ServiceAccount)."""
    controller_manager_flags: tuple[str, ...] = ()
    """Extra kube-controller-manager flags, appended last so they win, e.g. ``("--controllers=*,-nodelifecycle",)``
    to stop Nodes without a kubelet turning ``Unknown`` after 40 s and their pods being evicted ~5 min later."""
    scheduler: bool = False
    """Run kube-scheduler (needs ``kube-scheduler`` in the assets: ``scripts/k8s-assets.sh --node``). Only useful
    with a real node (:mod:`kresume.devtools.localcluster`); the node agent binds pods itself."""
    disabled_admission_plugins: tuple[str, ...] = ("ServiceAccount",)
    """kube-apiserver ``--disable-admission-plugins`` (a list flag: repeating it appends, so it is set only here).
    ServiceAccount is off by default, as envtest does (pods get no token; no token controller needed); a real node
    turns it on (:mod:`kresume.devtools.localcluster`)."""
    apiserver_flags: tuple[str, ...] = ()
    """Extra kube-apiserver flags, appended last, e.g. ``("--feature-gates=...",)``."""
    ready_timeout: float = 90.0
    """Bound for each readiness wait (apiserver ``/readyz``; controller-manager's default ServiceAccount). 4-6 s is
    typical; a shared 2-core machine can be much slower."""
    stop_timeout: float = 10.0
    """Grace after SIGTERM before SIGKILL, per process."""
    work_root: Path | None = None
    """Parent of the temporary work directory (PKI, etcd data, logs, kubeconfig); None: /dev/shm when writable
    (etcd fsyncs are then free), else the system temp dir."""


def find_assets(assets_dir: Path | None = None, *, controller_manager: bool = True,
                extra: tuple[str, ...] = ()) -> Path:
    """Return the directory holding the control-plane binaries.

    Order: ``assets_dir``, ``$KUBEBUILDER_ASSETS``, ``<repo>/.cache/k8s/bin``. ``extra``: more binaries that must
    be there (``kubelet``, ``kube-scheduler``: ``scripts/k8s-assets.sh --node``). Raises
    :class:`AssetsMissingError` naming the missing files and the command when the chosen directory is incomplete.
    """
    env = os.environ.get(ASSETS_ENV)
    directory = Path(assets_dir or env or REPO_ASSETS_DIR)
    names = ["etcd", "kube-apiserver", "kubectl"] + (["kube-controller-manager"] if controller_manager else [])
    names += list(extra)
    missing = [n for n in names if not os.access(directory / n, os.X_OK)]
    if missing:
        source = "assets_dir" if assets_dir else (f"${ASSETS_ENV}" if env else "the default cache")
        command = ASSETS_COMMAND + (" --node" if {"kubelet", "kube-scheduler"} & set(missing) else "")
        raise AssetsMissingError(
            f"Kubernetes binaries {missing} not found in {directory} (from {source}); fetch them with "
            f"`{command}` (then `export {ASSETS_ENV}=...` as it prints, or use the default cache dir)"
        )
    return directory


class _Process(_procs.ManagedProcess):
    """One control-plane child: :class:`~kresume.devtools._procs.ManagedProcess` without a readiness wait of its
    own (the plane probes the API server), output to ``log``, killed with its parent thread."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        super().__init__(name, argv, log, env=_NO_PROXY)
        try:
            self.start()
        except _procs.ProcessStartError as exc:
            if "address already in use" in _procs.log_tail(log):
                raise _PortTaken(f"{name}: port taken; retrying with new ports") from exc
            raise ControlPlaneError(str(exc)) from exc

    @property
    def log(self) -> Path:
        return self.log_path

    def exited(self) -> bool:
        """True when the process has ended."""
        return not self.running

    def check_alive(self) -> None:
        """Raise :class:`ControlPlaneError` with the log tail if the process has exited."""
        if self.exited():
            raise ControlPlaneError(
                f"{self.name} exited with code {self.returncode}; last lines of {self.log}:\n{_procs.log_tail(self.log)}"
            )


class _PortTaken(ControlPlaneError):
    pass


def _sweep_stale_workdirs(root: Path) -> None:
    """Remove work directories left by owners that died without cleanup (name: ``kresume-cp-<pid>-*``)."""
    for entry in root.glob(f"{_WORKDIR_PREFIX}*"):
        m = re.match(rf"{_WORKDIR_PREFIX}(\d+)-", entry.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            pass


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback; a context manager.

    After :meth:`start`: ``server`` (``https://127.0.0.1:PORT``), ``token`` (bearer token in ``system:masters``),
    ``ca_pem``/``ca_file`` (the serving CA), ``kubeconfig`` (file path, CA embedded), ``version`` (the server's
    gitVersion, ``v1.20.2`` with the project's assets), ``workdir``, ``logs`` (name -> log path), ``timings``
    (seconds from start to apiserver ``/readyz`` and to the controller-manager's default ServiceAccount).
    Raises :class:`AssetsMissingError` or :class:`ControlPlaneError`; a failed start leaves nothing running.
    """

    def __init__(self, settings: ControlPlaneSettings | None = None) -> None:
        self.settings = settings or ControlPlaneSettings()
        self.assets: Path | None = None
        self.workdir: Path | None = None
        self.server = self.token = self.version = ""
        self.ca_pem = b""
        self.ca_file = self.kubeconfig = Path()
        self.logs: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self._procs: list[_Process] = []
        self._etcd_url = ""
        self._apiserver_port = 0

    # --- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start all processes and wait until they serve; idempotent. Returns self."""
        if self._procs:
            return self
        s = self.settings
        self.assets = find_assets(s.assets_dir, controller_manager=s.controller_manager,
                                  extra=("kube-scheduler",) if s.scheduler else ())
        root = s.work_root or (Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir()))
        _sweep_stale_workdirs(root)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-", dir=root))
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            self._write_pki()
            for attempt in range(3):
                try:
                    self._start_etcd_and_apiserver()
                    break
                except _PortTaken:
                    self._stop_procs()
                    if attempt == 2:
                        raise
            self.timings["apiserver_ready_s"] = time.monotonic() - t0
            self.version = json.loads(self._get("/version"))["gitVersion"]
            self._write_kubeconfig(self.kubeconfig, self.token)
            if s.controller_manager:
                self._start_controller_manager()
                self.timings["controller_manager_ready_s"] = time.monotonic() - t0
            if s.scheduler:
                self._start_scheduler()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate every process (controller-manager, apiserver, etcd) and remove the work directory."""
        t0 = time.monotonic()
        self._stop_procs()
        self.timings["stop_s"] = time.monotonic() - t0
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.stop)

    def _stop_procs(self) -> None:
        while self._procs:
            self._procs.pop().stop(grace_s=self.settings.stop_timeout)

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        assert self.workdir is not None
        self.logs[name] = self.workdir / f"{name}.log"
        proc = _Process(name, argv, self.logs[name])
        self._procs.append(proc)
        return proc

    # --- processes -------------------------------------------------------------------------------------------
    def _write_pki(self) -> None:
        assert self.workdir is not None
        p = self.workdir / "pki"
        ca = pki.CertificateAuthority.create("kresume-test-cluster-ca")
        self.ca_pem = ca.pair.cert_pem
        self.ca_file = p / "ca.crt"
        ca.pair.write(p, "ca")
        ca.issue("kube-apiserver", pki.APISERVER_HOSTS).write(p, "apiserver")
        sa_key, sa_pub = pki.service_account_keys()
        (p / "sa.key").write_bytes(sa_key)
        (p / "sa.pub").write_bytes(sa_pub)
        self.token = "admin-" + os.urandom(16).hex()
        (p / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        self.kubeconfig = self.workdir / "kubeconfig"

    def _start_etcd_and_apiserver(self) -> None:
        assert self.assets is not None and self.workdir is not None
        p, (client, peer, api) = self.workdir / "pki", _procs.free_ports(3)
        data = self.workdir / f"etcd-{client}"
        etcd = self._spawn("etcd", [
            str(self.assets / "etcd"), "--name=test", f"--data-dir={data}", "--log-level=warn",
            f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}",
        ])  # fmt: skip
        self._etcd_url = f"http://127.0.0.1:{client}"
        self._apiserver_port = api
        self.server = f"https://127.0.0.1:{api}"
        self._start_apiserver([etcd])

    def _start_apiserver(self, also_watch: list[_Process]) -> _Process:
        """Spawn kube-apiserver on ``self._apiserver_port`` against ``self._etcd_url``; wait for ``/readyz``."""
        assert self.assets is not None and self.workdir is not None
        p = self.workdir / "pki"
        apiserver = self._spawn("kube-apiserver", [
            str(self.assets / "kube-apiserver"), f"--etcd-servers={self._etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self._apiserver_port}",
            "--insecure-port=0",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}", f"--token-auth-file={p / 'tokens.csv'}",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true", "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none", f"--cert-dir={self.workdir / 'apiserver-certs'}",
            *([f"--disable-admission-plugins={','.join(self.settings.disabled_admission_plugins)}"]
              if self.settings.disabled_admission_plugins else []),
            *self.settings.apiserver_flags,
        ])  # fmt: skip
        self._wait_until(f"kube-apiserver at {self.server} /readyz", [*also_watch, apiserver],
                         lambda: self._get("/readyz", timeout=2) == "ok")  # fmt: skip
        return apiserver

    def restart_apiserver(self, down_seconds: float = 0.0) -> float:
        """Stop kube-apiserver (SIGTERM, then SIGKILL after ``stop_timeout``), wait ``down_seconds``, start it
        again on the same port, etcd and PKI, and wait for ``/readyz``. Clients (kubeconfig, token, CA) stay
        valid; the other components reconnect by themselves. Returns the seconds from the new spawn to ready.

        Raises :class:`ControlPlaneError` when the new process exits or is not ready within ``ready_timeout``
        (e.g. the port was taken by another process while it was down).
        """
        old = next((p for p in self._procs if p.name == "kube-apiserver"), None)
        if old is None:
            raise ControlPlaneError("restart_apiserver: the control plane is not running")
        old.stop(grace_s=self.settings.stop_timeout)
        if down_seconds > 0:
            time.sleep(down_seconds)
        index = self._procs.index(old)
        self._procs.remove(old)
        t0 = time.monotonic()
        new = self._start_apiserver([])
        self._procs.remove(new)
        self._procs.insert(index, new)  # keep start order: stop() stops dependants first
        return time.monotonic() - t0

    def _start_controller_manager(self) -> None:
        assert self.assets is not None and self.workdir is not None
        p, kc = self.workdir / "pki", str(self.kubeconfig)
        flags = self.settings.controller_manager_flags
        kcm = self._spawn("kube-controller-manager", [
            str(self.assets / "kube-controller-manager"), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", "--secure-port=0", "--port=0", "--leader-elect=false",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            "--use-service-account-credentials=false", *flags,
        ])  # fmt: skip
        controllers = ",".join(f.split("=", 1)[1] for f in flags if f.startswith("--controllers=")) or "*"
        enabled = [c.strip() for c in controllers.split(",")]
        if "-serviceaccount" in enabled or ("*" not in enabled and "serviceaccount" not in enabled):
            kcm.check_alive()
            return
        # The serviceaccount controller creating `default` in `default` shows the controllers run (envtest.sh).
        self._wait_until("kube-controller-manager's default ServiceAccount", [kcm],
                         lambda: bool(self._get("/api/v1/namespaces/default/serviceaccounts/default", timeout=2)))

    def _start_scheduler(self) -> None:
        """kube-scheduler with the admin kubeconfig, no serving ports (nothing probes it), no leader election."""
        assert self.assets is not None
        sched = self._spawn("kube-scheduler", [
            str(self.assets / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}", "--bind-address=127.0.0.1",
            "--secure-port=0", "--port=0", "--leader-elect=false",
        ])  # fmt: skip
        sched.check_alive()

    def _wait_until(self, what: str, procs: list[_Process], probe: Callable[[], bool]) -> None:
        """Poll ``probe`` every 0.2 s until it returns True (connection errors count as False).

        Raises :class:`ControlPlaneError` with the last log lines of ``procs[-1]`` after ``ready_timeout`` s, or at
        once when one of ``procs`` exits (``_PortTaken`` when its log says the port was taken meanwhile).
        """
        deadline = time.monotonic() + self.settings.ready_timeout
        while True:
            for proc in procs:
                if proc.exited() and "address already in use" in _procs.log_tail(proc.log):
                    raise _PortTaken(f"{proc.name}: port taken; retrying with new ports")
                proc.check_alive()
            try:
                if probe():
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{what}: not ready after {self.settings.ready_timeout} s; last lines of "
                                        f"{procs[-1].log}:\n{_procs.log_tail(procs[-1].log)}")  # fmt: skip
            time.sleep(0.2)

    def _get(self, path: str, timeout: float = 10) -> str:
        """GET ``path`` on the apiserver as admin; returns the body; raises urllib errors (HTTPError on non-2xx)."""
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        with opener.open(req, timeout=timeout) as resp:
            return resp.read().decode()

    # --- clients ---------------------------------------------------------------------------------------------
    def _write_kubeconfig(self, path: Path, token: str | None, impersonate: str | None = None) -> Path:
        user: dict[str, Any] = {"token": token} if token else {}
        if impersonate:
            user["token"], user["as"] = self.token, impersonate
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kresume-test", "preferences": {},
            "clusters": [{"name": "kresume-test", "cluster": {
                "server": self.server, "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
            "users": [{"name": "kresume-test", "user": user}],
            "contexts": [{"name": "kresume-test", "context": {
                "cluster": "kresume-test", "user": "kresume-test", "namespace": "default"}}],
        }  # fmt: skip
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def env(self) -> dict[str, str]:
        """Environment for child processes (kubectl, kopf, helm) to reach this cluster: KUBECONFIG + NO_PROXY."""
        return {"KUBECONFIG": str(self.kubeconfig), **_NO_PROXY}

    def client_configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` for the admin token (no proxy, CA verified)."""
        import kubernetes.client

        cfg = kubernetes.client.Configuration()
        cfg.host = self.server
        cfg.api_key = {"authorization": self.token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        cfg.ssl_ca_cert = str(self.ca_file)
        return cfg

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` as admin; close it (or use ``with``) when done."""
        import kubernetes.client

        return kubernetes.client.ApiClient(self.client_configuration())

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig <admin> *args``; text stdout/stderr captured.

        Raises :class:`KubectlError` (with kubectl's stderr) on a non-zero exit when ``check``;
        ``subprocess.TimeoutExpired`` after ``timeout`` s. Impersonate with ``"--as=system:serviceaccount:NS:NAME"``
        (allowed for ``system:masters``; the apiserver adds the ServiceAccount groups itself).
        """
        assert self.assets is not None, "start() the control plane first"
        cmd = [str(self.assets / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **_NO_PROXY})  # fmt: skip
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def make_impersonating_kubeconfig(self, namespace: str, serviceaccount: str, path: Path | None = None) -> Path:
        """Write a kubeconfig that acts as ``system:serviceaccount:<namespace>:<serviceaccount>`` via impersonation.

        Uses the admin token with the kubeconfig ``as`` field (``Impersonate-User`` header); the apiserver adds the
        groups ``system:serviceaccounts`` and ``system:serviceaccounts:<namespace>``, so RBAC sees what the real
        ServiceAccount would get. The ServiceAccount need not exist. Default path: in the work directory.
        """
        assert self.workdir is not None, "start() the control plane first"
        path = path or self.workdir / f"kubeconfig-{namespace}-{serviceaccount}"
        return self._write_kubeconfig(path, None, impersonate=f"system:serviceaccount:{namespace}:{serviceaccount}")

    def serviceaccount_token(self, namespace: str, serviceaccount: str, expiration_seconds: int = 3600) -> str:
        """A real bound token for an existing ServiceAccount from the TokenRequest API (min. 600 s)."""
        import kubernetes.client as k

        with self.api_client() as api:
            req = k.AuthenticationV1TokenRequest(spec=k.V1TokenRequestSpec(
                audiences=[], expiration_seconds=expiration_seconds))  # fmt: skip
            res = k.CoreV1Api(api).create_namespaced_service_account_token(serviceaccount, namespace, req)
            return str(res.status.token)
