"""The admission benches' shared set-up: a real control plane, moto behind a counting proxy, the operator
as a process with the chart's webhook configuration, and the no-op webhook beside it.

Used by ``bench/webhook_latency.py`` (latency per create), ``bench/burst.py`` (creates as fast as the API
server takes them) and ``bench/scale.py`` (10,000 runs and pods in the operator's watch).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kresume import contract
from kresume.crds import __file__ as crds_init
from kresume.devtools import chart, objstores, pki
from kresume.devtools._procs import free_ports
from kresume.devtools.cluster import ControlPlane, ControlPlaneSettings
from kresume.devtools.operator_process import OperatorProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import countproxy, noop_webhook  # noqa: E402

BUCKET = "bench"
NS = "bench"


@dataclass
class Env:
    """What :func:`running` started: ``cp`` (control plane), ``moto``, ``proxy`` (counting, before moto),
    ``opts`` (moto's storage options, direct), ``operator`` (None until :meth:`start_operator`), ``work``."""

    cp: Any
    moto: Any
    proxy: countproxy.CountingProxy
    opts: dict[str, Any]
    work: Path
    port: int
    noop_port: int
    tls: Any
    operator: Any = None
    noop: Any = None
    extra: list[Any] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    """kresume's and the no-op webhook's configurations (applied by :func:`running`, or later by
    :meth:`register_webhooks` when it was told ``webhooks=False``)."""

    @property
    def log(self) -> Path:
        return self.work / "operator.log"

    def run_url(self, run: str) -> str:
        return f"s3://{BUCKET}/base/{NS}/{run}/"

    def register_webhooks(self) -> None:
        """Apply :attr:`hooks`: from now on opted-in pods pass kresume's webhook (and labelled ones the no-op's)."""
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(self.hooks))

    def start_operator(self, args: Sequence[str] = (), *, ready_timeout: float = 60.0) -> Any:
        """Start the operator process (webhook on :attr:`port`) and wait until kopf has listed the policy.

        ``ready_timeout``: seconds for the webhook port to serve TLS (kopf opens it after its first listings)."""
        self.operator = OperatorProcess(
            args=["--webhook-host", "127.0.0.1", "--webhook-port", str(self.port), "--tls-cert-file",
                  str(self.tls.cert_file), "--tls-key-file", str(self.tls.key_file), "--namespace", NS,
                  "--liveness-port", "0", "--metrics-port", "0", "--standalone", "--sidecar-image", "kresume:bench",
                  *args],
            env=self.cp.env(), log=self.log, webhook_port=self.port, ready_timeout=ready_timeout,
        ).start()
        time.sleep(3)  # let kopf list the policy (index) before the first admission
        return self.operator


@contextlib.contextmanager
def running(work: Path, *, timeout_seconds: int | None = None, webhooks: bool = True,
            controller_manager: bool = False) -> Iterator[Env]:
    """Start everything but the operator (see :meth:`Env.start_operator`); stop it all on exit.

    ``webhooks=False`` leaves the webhook configurations unregistered until :meth:`Env.register_webhooks`
    (pods created before pass no webhook); ``controller_manager`` starts kube-controller-manager too."""
    moto = objstores.SERVERS["s3-moto"]().start()
    cp = None
    env = None
    try:
        cp = ControlPlane(ControlPlaneSettings(controller_manager=controller_manager)).start()
        moto.create_bucket(BUCKET)
        proxy = countproxy.CountingProxy(moto.endpoint).start()
        opts = moto.storage_options
        cp.kubectl("create", "namespace", NS)
        cp.kubectl("label", "namespace", NS, "kresume-bench=yes")
        for f in sorted(Path(crds_init).parent.glob("*.yaml")):
            cp.kubectl("apply", "-f", str(f))
        for name in ("checkpointpolicies", "checkpointruns"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{name}.{contract.GROUP}", "--timeout=60s")
        tls = pki.make_webhook_tls(work)
        port, noop_port = free_ports(2)
        hook = chart.webhook_configuration("kresume-bench", port, tls.ca_bundle, namespace_labels={"kresume-bench": "yes"},
                                           timeout_seconds=timeout_seconds)
        env = Env(cp, moto, proxy, opts, work, port, noop_port, tls, hooks=[hook, noop_webhook.configuration(hook, noop_port)])
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": NS},
             "stringData": {"AWS_ACCESS_KEY_ID": opts["key"], "AWS_SECRET_ACCESS_KEY": opts["secret"]}},
            {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.POLICY_KIND,
             "metadata": {"name": "default", "namespace": NS},
             "spec": {"storage": f"s3://{BUCKET}/base", "credentialsSecret": "s3-creds",
                      "storageOptions": {"client_kwargs": {**opts.get("client_kwargs", {}),
                                                           "endpoint_url": proxy.endpoint},
                                         "config_kwargs": opts["config_kwargs"]}}},
        ]))
        if webhooks:
            env.register_webhooks()
        env.noop = subprocess.Popen([sys.executable, str(Path(noop_webhook.__file__)), "--port", str(noop_port),
                                     "--cert", str(tls.cert_file), "--key", str(tls.key_file)],
                                    stdout=subprocess.DEVNULL, stderr=(work / "noop.log").open("wb"))
        yield env
    finally:
        if env is not None:
            if env.noop is not None:
                env.noop.terminate()
                env.noop.wait(10)
            env.proxy.stop()
            if env.operator is not None:
                env.operator.stop()
        if cp is not None:
            cp.stop()
        moto.stop()


def commit_small(env: Env, run: str) -> None:
    """Commit a tiny torch checkpoint into ``run`` (directly to moto, not through the proxy)."""
    import torch

    from kresume.store.runstore import RunStore

    ckpt = env.work / "epoch=1-step=100.ckpt"
    if not ckpt.exists():
        torch.save({"w": torch.zeros(1024)}, ckpt)
    RunStore.open(env.run_url(run), env.opts).commit(ckpt)
