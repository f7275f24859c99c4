"""One pod on the local node agent: volumes, init containers, containers, restarts, termination, status.

A :class:`PodRunner` owns a thread that drives the pod the way kubelet does (Kubernetes docs "Pod
Lifecycle", "Init Containers", "Sidecar Containers", "Termination of Pods"):

1. volumes: ``emptyDir`` → a fresh folder, ``hostPath`` → the host path, ``configMap``/``secret`` → files;
2. init containers in order, each to success (``restartPolicy: Always`` ones are native sidecars: started
   and kept running);
3. all containers started; exits handled by the pod's ``restartPolicy`` (Never / OnFailure / Always);
4. once every regular container is done, the native sidecars get SIGTERM, as kubelet ≥ 1.29 does. A
   legacy-mode ``kresume-sidecar`` (a regular container) is one of the regular containers: nothing stops
   it, exactly as on a real pre-1.29 kubelet; it ends on its own once the trainer will not run again
   (``KRESUME_RESTART_POLICY``, :mod:`kresume.sidecar.leaving`), and the pod is done when it has;
5. termination (preemption, graceful deletion): SIGTERM to every container's main process, wait the
   grace period, SIGKILL the process groups, then phase ``Failed`` and, for a deletion, delete the pod
   object with grace 0, as kubelet finishes a graceful deletion.

Status goes to ``pods/status`` as a strategic merge patch after every change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kresume.devtools.node import hostpaths, podspec, runtime, status
from kresume.devtools.node.status import ContainerState, PodState

log = logging.getLogger("kresume.devtools.node")
TICK_SECONDS = 0.1
"""How often a pod thread polls its processes and stop requests, seconds."""
RESTART_BACKOFF_MAX = 10.0
"""Cap of the container restart back-off (kubelet: 5 min; short here for development), seconds."""


@dataclass
class StopRequest:
    """Why and how a pod is being stopped."""

    grace: float
    """Seconds between SIGTERM and SIGKILL (0 = SIGKILL at once)."""
    finish: str
    """``delete`` (set Failed, delete the object with grace 0), ``status`` (set Failed, keep the object),
    ``none`` (object gone or agent shutting down: report nothing)."""
    reason: str = ""
    message: str = ""
    requested_at: float = field(default_factory=time.time)
    conditions: list[tuple[str, str, str]] = field(default_factory=list)
    """Pod conditions ``(type, reason, message)`` set to True before the first signal, e.g. DisruptionTarget."""


@dataclass
class NodeContext:
    """What every pod runner shares with its agent."""

    node_name: str
    core: Any
    """``kubernetes.client.CoreV1Api``."""
    spawner: runtime.Spawner
    mount_points: runtime.MountPoints
    work_dir: Path
    log_dir: Path
    base_env: dict[str, str]
    mount_namespace: bool
    capacity: dict[str, str]
    on_change: Callable[[PodRunner], None] = lambda _runner: None
    host_root: Path | None = None
    """Prefix of ``hostPath`` volumes (:attr:`NodeSettings.host_root`); None: the host's own paths."""
    host_paths: tuple[str, ...] = ()
    """Host paths every container needs besides its own (the agent's Python: ``sys.prefix``, ``sys.path``):
    never hidden by a container's private ``/tmp``."""


class PodRunner:
    """Runs one pod (see module docstring). ``events`` records (time, what) for callers such as the demo."""

    def __init__(self, ctx: NodeContext, pod: dict[str, Any]) -> None:
        self.ctx, self.pod = ctx, pod
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.key = f"{self.namespace}/{self.name}"
        slug = f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.sandbox = ctx.work_dir / "pods" / slug
        self.logs_dir = ctx.log_dir / slug
        spec = pod.get("spec") or {}
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.grace = float(spec.get("terminationGracePeriodSeconds", 30))
        self.init_specs = list(spec.get("initContainers") or [])
        self.specs = list(spec.get("containers") or [])
        self.state = PodState()
        self.init = [self._cstate(c) for c in self.init_specs]
        self.regular = [self._cstate(c) for c in self.specs]
        self.procs: dict[str, runtime.ContainerProcess] = {}
        self.volume_dirs: dict[str, str] = {}
        self.events: list[tuple[float, str]] = []
        self.stop_request: StopRequest | None = None
        self.failed_at: float | None = None
        """Epoch seconds just before phase Failed/Succeeded was reported (None while the pod is active)."""
        self.done = threading.Event()
        self._held: list[str] = []
        self._signalled: set[str] = set()
        """Containers the agent itself signalled outside a stop request (sidecars after the main containers)."""
        self._sent: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=f"pod-{self.key}", daemon=True)

    def _cstate(self, c: dict[str, Any]) -> ContainerState:
        return ContainerState(name=c["name"], image=c.get("image", ""),
                              log_path=str(self.logs_dir / f"{c['name']}.log"))  # fmt: skip

    # --- public -------------------------------------------------------------------------------------------
    def start(self) -> PodRunner:
        """Start the pod's thread; returns self."""
        self._thread.start()
        return self

    def stop(self, request: StopRequest) -> None:
        """Ask the pod to terminate; the first request wins, except that a shorter grace replaces a longer one."""
        with self._lock:
            if self.stop_request is None or request.grace < self.stop_request.grace:
                if self.stop_request is not None and self.stop_request.finish != "none":
                    request.finish = self.stop_request.finish if request.finish != "none" else "none"
                self.stop_request = request

    def failed_containers(self) -> list[ContainerState]:
        """Copies of the containers (init and regular) that ended unsuccessfully on their own: terminated with a
        non-zero exit code (``StartError`` and ``CreateContainerConfigError`` included) while nobody asked the pod
        to stop and the agent had not signalled them (the sidecars it stops once the main containers are done).
        A container restarted by its restart policy is judged by its current run."""
        if self.stop_request is not None:
            return []
        return [dataclasses.replace(c) for c in [*self.init, *self.regular]
                if c.state == "terminated" and c.exit_code not in (0, None) and c.name not in self._signalled]

    def log_path(self, container: str) -> Path:
        """The host file holding ``container``'s stdout+stderr (all its restarts)."""
        return self.logs_dir / f"{container}.log"

    def note(self, what: str) -> None:
        """Record an event (time, text) and log it."""
        self.events.append((time.time(), what))
        log.info("%s: %s", self.key, what)

    # --- main loop ----------------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - a pod thread must never take the agent down
            log.exception("%s: pod runner crashed", self.key)
            self._kill_everything()
        finally:
            self._cleanup()
            self.done.set()
            self.ctx.on_change(self)

    def _run(self) -> None:
        now = time.time()
        self.state.start_time = now
        self.state.set_condition("PodScheduled", True, now=now)
        self.state.set_condition("Initialized", False, "ContainersNotInitialized", now=now)
        self.state.set_condition("Ready", False, "ContainersNotReady", now=now)
        self.state.set_condition("ContainersReady", False, "ContainersNotReady", now=now)
        self._prepare_volumes()
        self._report()
        if not self._run_init_containers():
            return self._finish()
        self.state.set_condition("Initialized", True, now=time.time())
        for spec, cs in zip(self.specs, self.regular, strict=True):
            self._launch(spec, cs)
        self.state.phase = "Running"
        self._report()
        backoff: dict[str, float] = {}
        sidecars_signalled = False
        while True:
            if self.stop_request is not None:
                return self._terminate()
            changed = self._poll(self.specs, self.regular, backoff)
            changed |= self._poll(self.init_specs, self.init, backoff, native_only=True)
            main_done = all(self._finished(c) for c in self.regular)
            if main_done and not sidecars_signalled:
                sidecars_signalled = True
                self.note("regular containers finished: SIGTERM to native sidecars")
                for name, proc in self._sidecar_procs():
                    self._signalled.add(name)
                    proc.terminate()
                self._sidecar_deadline = time.time() + self.grace
            if sidecars_signalled and time.time() > self._sidecar_deadline:
                for _name, proc in self._sidecar_procs():
                    proc.kill()
            if all(self._finished(c) for c in self.regular) and not any(
                    n in self.procs for n, _ in self._sidecar_procs()):  # fmt: skip
                break
            if changed:
                self._report()
            time.sleep(TICK_SECONDS)
        self._finish()

    def _finished(self, c: ContainerState) -> bool:
        if c.state != "terminated":
            return False
        return self.restart_policy == "Never" or (self.restart_policy == "OnFailure" and c.exit_code == 0)

    def _sidecar_procs(self) -> list[tuple[str, runtime.ContainerProcess]]:
        """The running native sidecars (init containers with ``restartPolicy: Always``)."""
        names = [s["name"] for s in self.init_specs if podspec.is_native_sidecar(s)]
        return [(n, self.procs[n]) for n in names if n in self.procs]

    def _finish(self) -> None:
        self.failed_at = time.time()
        self.state.phase = status.final_phase(self.regular)
        ready = False
        self.state.set_condition("Ready", ready, "PodCompleted", now=time.time())
        self.state.set_condition("ContainersReady", ready, "PodCompleted", now=time.time())
        self.note(f"pod {self.state.phase}")
        self._report()

    # --- volumes ------------------------------------------------------------------------------------------
    def _prepare_volumes(self) -> None:
        for vol in (self.pod.get("spec") or {}).get("volumes") or []:
            name, target = vol["name"], self.sandbox / "volumes" / vol["name"]
            if "emptyDir" in vol:
                target.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in vol:
                target = Path(vol["hostPath"]["path"])
                if self.ctx.host_root is not None:
                    target = self.ctx.host_root / str(target).lstrip("/")
                if vol["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                    target.mkdir(parents=True, exist_ok=True)
            elif "configMap" in vol or "secret" in vol:
                data = self._volume_data(vol)
                if data is None:
                    continue
                target.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (target / key).write_text(value)
            else:
                continue  # unsupported type: a container mounting it fails with a clear message
            self.volume_dirs[name] = str(target)

    def _volume_data(self, vol: dict[str, Any]) -> dict[str, str] | None:
        if "configMap" in vol:
            ref, data = vol["configMap"], self._lookup("configmap", self.namespace, vol["configMap"].get("name", ""))
        else:
            ref, data = vol["secret"], self._lookup("secret", self.namespace, vol["secret"].get("secretName", ""))
        if data is None:
            return None
        items = ref.get("items")
        return {i["path"]: data[i["key"]] for i in items if i["key"] in data} if items else dict(data)

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "secret":
                obj = self.ctx.core.read_namespaced_secret(name, namespace)
                return podspec.decode_secret({"data": obj.data or {}, "stringData": obj.string_data or {}})
            return dict(self.ctx.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # --- containers ---------------------------------------------------------------------------------------
    def _run_init_containers(self) -> bool:
        """Run init containers in order; False when the pod failed or was stopped meanwhile."""
        for spec, cs in zip(self.init_specs, self.init, strict=True):
            if podspec.is_native_sidecar(spec):
                self._launch(spec, cs)
                self._report()
                continue
            attempts = 0
            while True:
                self._launch(spec, cs)
                self._report()
                while (proc := self.procs.get(spec["name"])) is not None and proc.poll() is None:
                    if self.stop_request is not None:
                        self._terminate()
                        return False
                    time.sleep(TICK_SECONDS)
                self._record_exit(spec["name"], cs)
                self._report()
                if cs.exit_code == 0:
                    break
                if self.restart_policy == "Never":
                    self.state.reason = "InitContainerFailed"
                    return False
                attempts += 1
                self._sleep_or_stop(min(RESTART_BACKOFF_MAX, 2.0**attempts))
                if self.stop_request is not None:
                    self._terminate()
                    return False
                cs.restart_count += 1
        return True

    def _sleep_or_stop(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline and self.stop_request is None:
            time.sleep(TICK_SECONDS)

    def _launch(self, spec: dict[str, Any], cs: ContainerState) -> None:
        """Start one container; a config error leaves it terminated with ``CreateContainerConfigError``, a
        command that is not found with ``StartError`` (exit code 128, as kubelet reports both)."""
        if cs.state == "terminated":
            cs.last_terminated = cs.terminated()
        try:
            ip = status.HOST_IP
            view = {**self.pod, "status": {**(self.pod.get("status") or {}), "hostIP": ip, "podIP": ip,
                                           "podIPs": [{"ip": ip}]}}  # fmt: skip
            env = podspec.resolve_env(view, spec, secrets=lambda ns, n: self._lookup("secret", ns, n),
                                      configmaps=lambda ns, n: self._lookup("configmap", ns, n),
                                      node_capacity=self.ctx.capacity)  # fmt: skip
            full_env = {**self.ctx.base_env, "HOSTNAME": self.name, "HOME": str(self.sandbox / "home"), **env}
            argv = podspec.command_line(spec, full_env)
            binds = podspec.mounts(spec, self.volume_dirs)
            if binds and not self.ctx.mount_namespace:
                raise podspec.ContainerConfigError("volumeMounts need root (private mount namespaces)")
            workdir = spec.get("workingDir")
            if hostpaths.resolve_command(argv[0], full_env, workdir or str(self.sandbox), binds) is None:
                raise podspec.ContainerStartError(
                    f'exec: "{argv[0]}": executable file not found in $PATH (PATH={full_env.get("PATH", "")})')
            (self.sandbox / "home").mkdir(parents=True, exist_ok=True)
            for b in binds:
                if b.target not in self._held:
                    self.ctx.mount_points.acquire(b.target, is_file=Path(b.source).is_file())
                    self._held.append(b.target)
            private_tmp = self._private_tmp(spec["name"], argv, full_env, workdir, binds)
            wrapped = runtime.container_argv(argv, binds, workdir, self.ctx.mount_namespace, private_tmp)
            log_path = self.log_path(spec["name"])
            log_path.parent.mkdir(parents=True, exist_ok=True)
            kept = f"; private /tmp keeps {', '.join(private_tmp.keep)}" if private_tmp and private_tmp.keep else ""
            with open(log_path, "a") as f:
                f.write(f"--- kresume dev node: start {spec['name']} (restart {cs.restart_count}): {argv}{kept}\n")
            proc = runtime.ContainerProcess(self.ctx.spawner, wrapped, full_env, log_path, self.sandbox)
        except (podspec.ContainerConfigError, OSError) as exc:
            # Every field before ``state``: readers on other threads (the demo) see a terminated state complete.
            cs.reason = getattr(exc, "reason", podspec.ContainerConfigError.reason)
            cs.message, cs.exit_code, cs.started_at, cs.finished_at = str(exc), 128, time.time(), time.time()
            cs.state = "terminated"
            self.note(f"container {spec['name']}: {cs.reason}: {exc}")
            with contextlib.suppress(OSError):
                self.log_path(spec["name"]).parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path(spec["name"]), "a") as f:
                    f.write(f"--- kresume dev node: {spec['name']} not started: {cs.reason}: {exc}\n")
            return
        self.procs[spec["name"]] = proc
        cs.state, cs.reason, cs.message, cs.exit_code = "running", "", "", None
        cs.started_at, cs.finished_at, cs.pid = proc.started, None, proc.pid
        self.note(f"container {spec['name']} started (pid {proc.pid})")

    def _private_tmp(self, name: str, argv: list[str], env: dict[str, str], workdir: str | None,
                     binds: list[podspec.Mount]) -> podspec.PrivateTmp | None:  # fmt: skip
        """The container's private ``/tmp`` (None without mount namespaces, or when a volume is mounted under
        ``/tmp``), keeping visible the host ``/tmp`` entries it needs (a checkout under ``/tmp`` with its venv)."""
        tmp_root = podspec.PRIVATE_TMP
        if not self.ctx.mount_namespace or any(
                b.target.rstrip("/") == tmp_root or b.target.startswith(f"{tmp_root}/") for b in binds):  # fmt: skip
            return None
        tmp = self.sandbox / "tmp" / name
        tmp.mkdir(parents=True, exist_ok=True)
        needed = hostpaths.needed_paths(argv, env, workdir, binds, self.ctx.host_paths)
        keep = tuple(k for k in podspec.tmp_entries_to_keep(needed, binds) if os.path.lexists(k))
        for entry in keep:
            point = tmp / Path(entry).name
            if os.path.isdir(entry):
                point.mkdir(exist_ok=True)
            elif not point.exists():
                point.touch()
        return podspec.PrivateTmp(str(tmp), keep)

    def _record_exit(self, name: str, cs: ContainerState) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        code = proc.poll()
        cs.exit_code, cs.finished_at, cs.reason = code, time.time(), "Completed" if code == 0 else "Error"
        cs.message = self._termination_message(name)
        cs.state = "terminated"  # last: see _launch
        self.note(f"container {name} exited with {code}")

    def _termination_message(self, name: str) -> str:
        """What the container left at its ``terminationMessagePath`` (in a volume; at most 4 KiB), as kubelet
        reports it in ``state.terminated.message``; empty when it left nothing."""
        spec = next((c for c in [*self.init_specs, *self.specs] if c["name"] == name), None)
        if spec is None:
            return ""
        try:
            source = podspec.termination_message_source(spec, self.volume_dirs)
            if source is None:
                return ""
            with open(source, "rb") as f:
                return f.read(podspec.TERMINATION_MESSAGE_MAX).decode("utf-8", "replace")
        except (OSError, podspec.ContainerConfigError):
            return ""

    def _poll(self, specs: list[dict[str, Any]], states: list[ContainerState], backoff: dict[str, float],
              native_only: bool = False) -> bool:  # fmt: skip
        changed = False
        for spec, cs in zip(specs, states, strict=True):
            if native_only and not podspec.is_native_sidecar(spec):
                continue
            name = spec["name"]
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                self._record_exit(name, cs)
                changed = True
            if cs.state != "terminated" or name in self.procs:
                continue
            restart = podspec.is_native_sidecar(spec) or self.restart_policy == "Always" or (
                self.restart_policy == "OnFailure" and cs.exit_code != 0)
            if not restart:
                continue
            due = backoff.setdefault(name, time.time() + min(RESTART_BACKOFF_MAX, 2.0 ** (cs.restart_count + 1)))
            if time.time() >= due:
                backoff.pop(name)
                cs.restart_count += 1
                self._launch(spec, cs)
                changed = True
        return changed

    # --- termination --------------------------------------------------------------------------------------
    def _terminate(self) -> None:
        req = self.stop_request
        assert req is not None
        self.note(f"terminating ({req.reason or 'stop'}, grace {req.grace:g} s)")
        for type_, reason, message in req.conditions:
            self.state.set_condition(type_, True, reason, message, now=time.time())
        if req.finish != "none":
            self._report()  # e.g. the DisruptionTarget condition, before any signal
        deadline = time.time() + req.grace
        natives = {s["name"] for s in self.init_specs if podspec.is_native_sidecar(s)}
        first = [(n, p) for n, p in self.procs.items() if n not in natives]
        if req.grace <= 0:
            self._kill_everything()
        else:
            for _n, p in first:
                p.terminate()
            self._wait_until(deadline, [n for n, _ in first])
            for n in natives & set(self.procs):
                self.procs[n].terminate()
            self._wait_until(deadline, list(self.procs))
            self._kill_everything()
        for spec, cs in [*zip(self.init_specs, self.init, strict=True), *zip(self.specs, self.regular, strict=True)]:
            if spec["name"] in self.procs:
                self.procs[spec["name"]].wait(5)
                self._record_exit(spec["name"], cs)
            if cs.state == "waiting":
                cs.state, cs.reason, cs.exit_code, cs.finished_at = "terminated", "ContainerStatusUnknown", 137, time.time()
        if req.finish == "none":
            return
        if self.state.phase not in ("Succeeded", "Failed"):
            self.failed_at = time.time()
            self.state.phase = "Failed"
            self.state.reason, self.state.message = req.reason or "Terminated", req.message or None
        now = time.time()
        self.state.set_condition("Ready", False, "PodCompleted", now=now)
        self.state.set_condition("ContainersReady", False, "PodCompleted", now=now)
        self._report()
        self.note(f"pod {self.state.phase} ({req.reason})")
        if req.finish == "delete":
            self._delete_object()

    def _wait_until(self, deadline: float, names: list[str]) -> None:
        """Wait for ``names`` to exit (until ``deadline``), recording each exit as it happens (its ``finishedAt``
        is when it ended, not when the last of them did)."""
        states = {c.name: c for c in [*self.init, *self.regular]}
        while True:
            for n in names:
                if n in self.procs and self.procs[n].poll() is not None and n in states:
                    self._record_exit(n, states[n])
            if time.time() >= deadline or not any(n in self.procs for n in names):
                return
            time.sleep(TICK_SECONDS / 2)

    def _kill_everything(self) -> None:
        for p in list(self.procs.values()):
            p.kill()

    def _delete_object(self) -> None:
        import kubernetes.client as k
        from kubernetes.client.exceptions import ApiException

        try:
            self.ctx.core.delete_namespaced_pod(self.name, self.namespace, body=k.V1DeleteOptions(
                grace_period_seconds=0, preconditions=k.V1Preconditions(uid=self.uid)))  # fmt: skip
            self.note("pod object deleted (grace 0)")
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # --- status -------------------------------------------------------------------------------------------
    def status_dict(self) -> dict[str, Any]:
        """The ``PodStatus`` the agent would report now."""
        all_running = all(c.state == "running" for c in self.regular)
        if self.state.phase == "Running":
            self.state.set_condition("ContainersReady", all_running, None if all_running else "ContainersNotReady",
                                     now=time.time())  # fmt: skip
            self.state.set_condition("Ready", all_running, None if all_running else "ContainersNotReady",
                                     now=time.time())  # fmt: skip
        return status.pod_status(self.state, self.init, self.regular)

    def _report(self) -> None:
        from kubernetes.client.exceptions import ApiException

        body = self.status_dict()
        if body == self._sent:
            return
        try:
            self.ctx.core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": body},
                _content_type="application/strategic-merge-patch+json")  # fmt: skip
            self._sent = body
        except ApiException as exc:
            if exc.status == 404:
                self.stop(StopRequest(grace=0, finish="none", reason="PodDeleted"))
            else:
                log.warning("%s: status update failed: %s", self.key, exc.reason)
        self.ctx.on_change(self)

    def _cleanup(self) -> None:
        self._kill_everything()
        for p in list(self.procs.values()):
            p.wait(5)
        for target in self._held:
            self.ctx.mount_points.release(target)
        self._held.clear()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.sandbox, ignore_errors=True)
