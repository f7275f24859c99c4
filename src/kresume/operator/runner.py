"""Run the operator: kopf settings from :class:`OperatorConfig`, then ``kopf.operator()``.

The equivalent of ``kopf run -m kresume.operator.handlers`` with our flags: webhook server on our
cert files (or a generated dev pair), liveness endpoint, metrics server, namespaces, peering.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import kopf

from kresume.operator import handlers, metrics
from kresume.operator.settings import OperatorConfig
from kresume.operator.webhook import WebhookServer

logger = logging.getLogger(__name__)


def webhook_server(config: OperatorConfig, *, workdir: Path | None = None) -> WebhookServer:
    """The admission server; without cert files, a throwaway CA + serving pair for 127.0.0.1/localhost
    is written to ``workdir`` (default a temp dir) and its CA path logged (development only)."""
    w = config.webhook
    cert, key = w.cert_file, w.key_file
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert-file and --tls-key-file go together; give both or neither")
    if not cert:
        from kresume.dev import pki

        tls = pki.make_webhook_tls(workdir or Path(tempfile.mkdtemp(prefix="kresume-webhook-")))
        cert, key = str(tls.cert_file), str(tls.key_file)
        logger.warning("no --tls-cert-file: serving a self-signed certificate; its CA is %s", tls.ca_file)
    return WebhookServer(addr=w.host, port=w.port, certfile=cert, pkeyfile=key)


def kopf_settings(config: OperatorConfig, settings: kopf.OperatorSettings | None = None) -> kopf.OperatorSettings:
    """kopf settings for kresume (admission server, unmanaged webhook config, quiet event posting)."""
    settings = settings or kopf.OperatorSettings()
    settings.admission.server = webhook_server(config)
    settings.admission.managed = None  # the chart owns the MutatingWebhookConfiguration (failurePolicy Ignore)
    settings.posting.level = logging.WARNING  # kopf's own INFO logs do not become Events on pods
    settings.peering.mandatory = False
    settings.peering.clusterwide = not config.scope.namespaces
    return settings


async def run_async(config: OperatorConfig, *, stop_flag: Any = None, ready_flag: Any = None) -> None:
    """Run until stopped (SIGTERM/SIGINT, or ``stop_flag``)."""
    registry = handlers.register(kopf.OperatorRegistry(), config)
    metrics.serve(config.probes.metrics_port)
    memo = kopf.Memo(kresume=handlers.new_state(config))
    await kopf.operator(
        registry=registry,
        settings=kopf_settings(config),
        memo=memo,
        standalone=config.scope.peering is None,
        peering_name=config.scope.peering,
        clusterwide=not config.scope.namespaces,
        namespaces=list(config.scope.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{config.probes.liveness_port}/healthz" if config.probes.liveness_port else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def run(config: OperatorConfig) -> None:
    """Blocking entry point of ``kresume operator``."""
    asyncio.run(run_async(config))
