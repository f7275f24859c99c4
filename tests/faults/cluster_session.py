"""A Kubernetes fault session's cluster side: namespace, policy, a run with checkpoints (the newest marked bad),
the operator process behind the chart's RBAC and webhook configuration, pod creations timed at the API, and the
checks of :mod:`faults.k8s_faults` read back from the API server and the store."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from _fixtures.operator import kget, register_webhook, s3_policy, start_operator
from faults import invariants as inv
from faults.kinds import Tally
from faults.trainer import Written, record_files
from faults.world import World
from kresume import contract
from kresume.devtools.operator_process import OperatorProcess
from kresume.store import layout, reading
from kresume.store.runstore import RunStore

WEBHOOK_TIMEOUT = 10
"""The session's webhook configuration timeoutSeconds (register_webhook: the API maximum)."""
CREATE_MARGIN = 10.0
"""Seconds past the webhook timeout a create may take on this loaded 2-core machine before it counts as blocked."""
RUN = "train"


@dataclass
class Created:
    name: str
    ok: bool
    seconds: float
    error: str = ""
    newest_before: str | None = None
    """The newest valid committed id when the create call was sent (the least the pod may get)."""


class Blackhole:
    """A TCP port on 127.0.0.1 that accepts connections and never answers (a webhook that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="blackhole")
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.5)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()
        self._thread.join(5)


class ClusterSession:
    """Namespace, policy, run with checkpoints (newest marked bad), operator and webhook of one session."""

    def __init__(self, world: World, kind: str, rng: random.Random, workdir: Path) -> None:
        self.world, self.kind, self.rng, self.workdir = world, kind, rng, workdir
        self.cp = world.plane
        self.ns = f"faults-{kind.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        self.tag = uuid.uuid4().hex[:8]
        self.base = world.prefix(f"k8s-{self.tag}")
        self.run_url = f"{self.base}/{self.ns}/{RUN}/"
        self.truth = RunStore.open(self.run_url, world.moto.storage_options)
        self.created: list[Created] = []
        self.seeded: dict[str, Written] = {}
        self.procs: list[OperatorProcess] = []
        self._i = 0
        self._lock = threading.Lock()
        self.tally = Tally(kind, sessions=1)

    # ------------------------------------------------------------------ set-up
    @contextlib.contextmanager
    def up(self) -> Iterator[ClusterSession]:
        cp, ns = self.cp, self.ns
        cp.kubectl("create", "namespace", ns)
        cp.kubectl("label", "namespace", ns, f"kresume-test={ns}")
        try:
            s3_policy(cp, ns, self.base, self.world.moto)
            self._seed_checkpoints()
            with open(self.workdir / "operator-fixture.out", "w") as out, contextlib.redirect_stdout(out), \
                    start_operator(cp, self.workdir, namespaces=[ns], args=["--refresh-interval", "2"]) as op, \
                    register_webhook(cp, op, {"kresume-test": ns}, timeout_seconds=WEBHOOK_TIMEOUT) as hook:
                self.op, self.hook = op, hook
                self.procs.append(op.proc)
                op.proc.wait_serving(cp.kubectl, ns)
                yield self
        finally:
            for p in self.procs:
                p.stop()
            cp.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)

    def _seed_checkpoints(self) -> None:
        src = self.workdir / "seed"
        src.mkdir(parents=True, exist_ok=True)
        ids = []
        for step in (10, 20, 30):
            path = src / f"epoch=0-step={step}.ckpt"
            torch.save({"w": torch.randn(2**16), "global_step": step}, path)
            ids.append(self.truth.commit(path).id)
            self.seeded[path.name] = Written(path.name, "torch", step, record_files(path), True)
        self.truth.mark_bad(ids[-1], "fault campaign: the newest is bad, the webhook must skip it")

    # ------------------------------------------------------------------ the operator
    @property
    def operator(self) -> OperatorProcess:
        return self.procs[-1]

    def kill_operator(self) -> None:
        """SIGKILL the operator's process group (no clean-up runs)."""
        pid = self.operator.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def restart_operator(self) -> float:
        """A new operator process on the same port, certificate and kubeconfig; seconds until it serves TLS."""
        old = self.operator
        old.stop(timeout=2.0)
        new = OperatorProcess(old.args, old.env, old.log, old.webhook_port, ready_timeout=120.0)
        t0 = time.monotonic()
        new.start()
        self.procs.append(new)
        return time.monotonic() - t0

    # ------------------------------------------------------------------ pods
    def newest_valid(self) -> str | None:
        found = self.truth.latest()
        return found.checkpoint_id if found else None

    def create_pods(self, n: int, threads: int = 4) -> list[Created]:
        """Create ``n`` opted-in pods of the run concurrently; returns what each create call did."""
        import kubernetes.client as k

        def one(_: int) -> Created:
            with self._lock:
                self._i += 1
                name = f"p-{self._i:03d}-{uuid.uuid4().hex[:4]}"
            before = self.newest_valid()
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "labels": {contract.LABEL_INJECT: "true", "faults": self.tag},
                "annotations": {contract.ANN_RUN: RUN}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "trainer", "image": "kresume-faults:none"}]}}
            t0 = time.monotonic()
            try:
                with self.cp.api_client() as api:
                    k.CoreV1Api(api).create_namespaced_pod(self.ns, body, _request_timeout=WEBHOOK_TIMEOUT + 50)
                return Created(name, True, time.monotonic() - t0, newest_before=before)
            except Exception as exc:  # noqa: BLE001 - recorded: a failed create is a blocked pod
                return Created(name, False, time.monotonic() - t0, f"{type(exc).__name__}: {str(exc)[:300]}", before)

        with ThreadPoolExecutor(threads) as pool:
            out = list(pool.map(one, range(n)))
        with self._lock:
            self.created += out
        return out

    def pods(self) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in kget(self.cp, "pods", "-n", self.ns, "-l", f"faults={self.tag}")["items"]}

    def warned(self) -> set[str]:
        return {e["involvedObject"]["name"] for e in kget(self.cp, "events", "-n", self.ns)["items"]
                if e.get("reason") == "KresumeNotInjected"}

    def injected_into_next_pod(self) -> bool:
        """The operator injects a pod created now (the newest valid checkpoint)."""
        c = self.create_pods(1, threads=1)[0]
        pod = self.pods().get(c.name)
        return bool(c.ok and pod and contract.ANN_INJECTED in (pod["metadata"].get("annotations") or {}))

    # ------------------------------------------------------------------ checks
    def check(self, wait_warnings: float = 60.0) -> None:
        v = self.tally.violations
        for c in self.created:
            if not c.ok or c.seconds > WEBHOOK_TIMEOUT + CREATE_MARGIN:
                v.append(inv.Violation("pod_blocked", f"{c.name}: create {'failed' if not c.ok else 'took'} "
                                                      f"{c.seconds:.1f} s {c.error}".rstrip()))
        bad = self.truth.bad_ids()
        pods = self.pods()
        uninjected = set()
        degraded: list[str] = []
        for c in self.created:
            pod = pods.get(c.name)
            if not c.ok or pod is None:
                continue
            ann = pod["metadata"].get("annotations") or {}
            if contract.ANN_INJECTED not in ann:
                uninjected.add(c.name)
                continue
            env = {e["name"]: e.get("value") for ctr in pod["spec"]["containers"] if ctr["name"] == "trainer"
                   for e in ctr.get("env", [])}
            url = env.get(contract.ENV_RESUME_FROM)
            found = self._judge_injection(c, url, bad)
            if found and all(x.kind == "stale_injected" for x in found) and ann.get(contract.ANN_RESOLVE_ERROR):
                degraded.append(f"{c.name}: {ann[contract.ANN_RESOLVE_ERROR][:80]}")  # said loudly: not silent
                continue
            v += found
        end = time.monotonic() + wait_warnings
        warned = self.warned()
        while uninjected - warned and time.monotonic() < end:
            time.sleep(1.0)
            warned = self.warned()
        for name in sorted(uninjected - warned):
            v.append(inv.Violation("silent_outage", f"{name} was admitted without kresume and no "
                                                    "KresumeNotInjected Warning says so"))
        self.tally.notes.append(f"{len(self.created)} pods created, {len(uninjected)} admitted without kresume "
                                f"({len(uninjected & warned)} with the Warning)")
        if degraded:
            self.tally.notes.append(f"{len(degraded)} admitted with an older or no checkpoint and the resolve-error "
                                    "annotation + ResolveFailed Warning (resume_from() then reads the store itself): "
                                    + "; ".join(degraded[:5]))

    def _judge_injection(self, c: Created, url: str | None, bad: set[str]) -> list[inv.Violation]:
        if not url:
            if c.newest_before is not None:
                return [inv.Violation("stale_injected", f"{c.name}: no checkpoint injected although "
                                                        f"{c.newest_before} was committed and valid")]
            return []
        cid = url.rstrip("/").split("/checkpoints/", 1)[-1].split("/", 1)[0]
        if cid in bad or reading.load_valid(self.truth, cid) is None:
            return [inv.Violation("bad_injected", f"{c.name}: injected {cid}, which is bad-marked or incomplete")]
        key, least = layout.parse_checkpoint_id(cid), layout.parse_checkpoint_id(c.newest_before or "")
        if least is not None and (key is None or key < least):
            return [inv.Violation("stale_injected", f"{c.name}: injected {cid}, older than {c.newest_before} "
                                                    "committed before its create")]
        return []
