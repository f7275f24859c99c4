"""Run the operator: kopf settings from :class:`OperatorConfig`, then ``kopf.operator()``.

The equivalent of ``kopf run -m kresume.operator.handlers`` with our flags: webhook server on our
cert files (or a generated dev pair), liveness endpoint, metrics server, namespaces, peering.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import kopf

from kresume.operator import devtls, handlers, kopf_listing, kopf_toggles, metrics
from kresume.operator.settings import OperatorConfig
from kresume.operator.webhook import WebhookServer

logger = logging.getLogger(__name__)


def webhook_server(config: OperatorConfig, *, workdir: Path | None = None) -> WebhookServer:
    """The admission server; without cert files, a throwaway self-signed pair for 127.0.0.1/localhost
    (:mod:`kresume.operator.devtls`) is written to ``workdir`` (default a temp dir) and its path logged
    (development only: that certificate is also the ``caBundle`` to register)."""
    w = config.webhook
    cert, key = w.cert_file, w.key_file
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert-file and --tls-key-file go together; give both or neither")
    if not cert:
        pair = devtls.self_signed_pair(workdir or Path(tempfile.mkdtemp(prefix="kresume-webhook-")))
        cert, key = str(pair.cert_file), str(pair.key_file)
        logger.warning("no --tls-cert-file: serving a self-signed certificate for %s (development only); "
                       "trust it as the webhook's caBundle: %s", ", ".join(devtls.DEV_HOSTS), pair.cert_file)
    return WebhookServer(addr=w.host, port=w.port, certfile=cert, pkeyfile=key)


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing: kresume has no change-detecting handlers (``on.create``/
    ``update``/``resume``/``delete``, timers, daemons: :func:`check_no_changing_handlers`), so it never needs
    the last handled state of an object. kopf builds the essence of every object on every watch event
    whatever the handlers (a deep copy of the whole pod, then one more to clear its progress annotations:
    ``kopf._core.reactor.processing._detect_causes``); under a burst of pod creations that was the largest
    share of the operator's event loop (py-spy, bench/burst.py), ahead of the admissions themselves."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def check_no_changing_handlers(registry: kopf.OperatorRegistry) -> None:
    """Raise RuntimeError when ``registry`` has handlers that need a diff base (:class:`NoDiffBase` would
    break them)."""
    found = [h.id for h in [*registry._changing.get_all_handlers(), *registry._spawning.get_all_handlers()]]
    if found:
        raise RuntimeError(f"handlers {found} need kopf's diff base; remove NoDiffBase from kopf_settings")


#: Objects per page of the operator's initial listings (kopf ``settings.watching.chunk_size``).
LIST_CHUNK = 500
#: Seconds kopf's per-object worker waits for the object's next event before it exits (kopf
#: ``settings.queueing.idle_timeout``). kopf's default 5: with 1 s (tried for memory at 10,000 pods) the two-rank
#: e2e (tests/e2e/test_e2e_ranks.py) failed 2 of 3 runs — a recreated rank joined its old resume epoch: the pod
#: watch had not handled the old pod's deletion yet (fixed at its root since: :func:`epochbook._pod_gone`) — and
#: passed 3 of 3 with 5 s. Kept at 5 until a 1 s setting is measured safe.
WORKER_IDLE_SECONDS = 5.0


def kopf_settings(config: OperatorConfig, settings: kopf.OperatorSettings | None = None, *,
                  workdir: Path | None = None) -> kopf.OperatorSettings:
    """kopf settings for kresume (admission server, unmanaged webhook config, quiet event posting)."""
    settings = settings or kopf.OperatorSettings()
    settings.admission.server = webhook_server(config, workdir=workdir)
    settings.admission.managed = None  # the chart owns the MutatingWebhookConfiguration (failurePolicy Ignore)
    settings.posting.level = logging.WARNING  # kopf's own INFO logs do not become Events on pods
    settings.peering.mandatory = False
    settings.peering.clusterwide = not config.scope.namespaces
    settings.persistence.diffbase_storage = NoDiffBase()
    # The initial listings (pods, CheckpointRuns) in pages, not one response holding every object as JSON and
    # parsed at once (kopf's WatchingSettings.chunk_size, "for large clusters").
    settings.watching.chunk_size = LIST_CHUNK
    # A per-object worker holds its last event (the whole body) until it has idled this long: seconds' worth of a
    # large listing stay alive (bench/RESULTS.md "Operator at cluster scale"); see WORKER_IDLE_SECONDS for why 5.
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    return settings


async def run_async(config: OperatorConfig, *, stop_flag: Any = None, ready_flag: Any = None,
                    workdir: Path | None = None) -> None:
    """Run until stopped (SIGTERM/SIGINT, or ``stop_flag``). ``workdir`` holds a generated dev TLS pair."""
    kopf_toggles.apply()  # kopf's index-readiness gate: linear, not quadratic, in the watched objects
    kopf_listing.apply()  # when kresume's views hold the whole initial listing
    settings = kopf_settings(config, workdir=workdir)
    registry = handlers.register(kopf.OperatorRegistry(), config, webhook=settings.admission.server)
    check_no_changing_handlers(registry)
    metrics.serve(config.probes.metrics_port)
    memo = kopf.Memo(kresume=handlers.new_state(config))
    await kopf.operator(
        registry=registry,
        settings=settings,
        memo=memo,
        standalone=config.scope.peering is None,
        peering_name=config.scope.peering,
        clusterwide=not config.scope.namespaces,
        namespaces=list(config.scope.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{config.probes.liveness_port}/healthz" if config.probes.liveness_port else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


class NoKubernetesCredentials(RuntimeError):
    """Neither in-cluster credentials nor a kubeconfig could be loaded."""


def preflight() -> None:
    """Fail fast when there are no Kubernetes credentials, instead of kopf's endless login retries
    ("will try again in 60 seconds"). Same search as kopf's ``login_via_client``: in-cluster service
    account first, then ``$KUBECONFIG`` / ``~/.kube/config``.

    Raises
    ------
    NoKubernetesCredentials
        With the reason and the fix.
    """
    from kubernetes import config as kconfig

    try:
        kconfig.load_incluster_config()
        return
    except kconfig.ConfigException:
        pass
    try:
        kconfig.load_kube_config()
    except (kconfig.ConfigException, OSError, TypeError, ValueError) as exc:
        raise NoKubernetesCredentials(
            f"no Kubernetes credentials: not in a cluster, and no usable kubeconfig ({str(exc).strip() or type(exc).__name__}); "
            "set KUBECONFIG to a kubeconfig file or run the operator in its Deployment (helm install)") from exc


def run(config: OperatorConfig) -> None:
    """Blocking entry point of ``kresume operator``; does not return once kopf has stopped.

    A generated dev TLS pair lives in a temporary folder removed when the operator stops. Then the process
    exits at once (status 0) without joining the resolver's worker threads: they only *read* the store, and one
    blocked on a frozen store (its request timeouts and the store layer's retries can add up to a minute) would
    otherwise hold the exit until the kubelet's SIGKILL (measured: 20 s after SIGTERM in the admission tests).

    Raises
    ------
    NoKubernetesCredentials
        See :func:`preflight`.
    """
    preflight()
    with tempfile.TemporaryDirectory(prefix="kresume-webhook-") as tmp:
        asyncio.run(run_async(config, workdir=Path(tmp)))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
