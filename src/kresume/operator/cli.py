"""``kresume operator``: the CLI over :func:`kresume.operator.runner.run`.

Mount in the main CLI with ``app.command("operator")(kresume.operator.cli.command)``; standalone it
is ``python -m kresume.operator``. Every option also reads the ``KRESUME_*`` env variable shown in
``--help``; flags win over env, env over defaults.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Optional

import typer

from kresume.operator import decisions
from kresume.operator.settings import (
    InjectionSettings,
    OperatorConfig,
    ProbeSettings,
    ResolutionSettings,
    RunSettings,
    ScopeSettings,
    WebhookSettings,
)

_W, _P, _I, _R, _N = WebhookSettings(), ProbeSettings(), InjectionSettings(), ResolutionSettings(), RunSettings()


def command(
    webhook_host: str = typer.Option(_W.host, "--webhook-host", envvar="KRESUME_WEBHOOK_HOST", show_envvar=True,
                                     help="Address the admission webhook server listens on."),
    webhook_port: int = typer.Option(_W.port, "--webhook-port", envvar="KRESUME_WEBHOOK_PORT", show_envvar=True,
                                     help="HTTPS port of the webhook server; the handler path is /inject-pod."),
    tls_cert_file: Optional[str] = typer.Option(
        None, "--tls-cert-file", envvar="KRESUME_TLS_CERT_FILE", show_envvar=True,
        help="PEM serving certificate (re-read when it changes). Without it and --tls-key-file a self-signed "
             "pair for 127.0.0.1 is generated (development only)."),
    tls_key_file: Optional[str] = typer.Option(None, "--tls-key-file", envvar="KRESUME_TLS_KEY_FILE",
                                               show_envvar=True, help="PEM private key of --tls-cert-file."),
    namespace: Optional[list[str]] = typer.Option(
        None, "--namespace", "-n", envvar="KRESUME_NAMESPACES", show_envvar=True,
        help="Namespace to serve (repeatable; kopf patterns like team-*). Default: cluster-wide."),
    liveness_port: int = typer.Option(_P.liveness_port, "--liveness-port", envvar="KRESUME_LIVENESS_PORT",
                                      show_envvar=True, help="Port of the liveness probe http://:PORT/healthz; 0: off."),
    metrics_port: int = typer.Option(_P.metrics_port, "--metrics-port", envvar="KRESUME_METRICS_PORT",
                                     show_envvar=True, help="Port of Prometheus /metrics; 0: off."),
    peering: Optional[str] = typer.Option(
        None, "--peering", envvar="KRESUME_PEERING", show_envvar=True,
        help="kopf peering name: replicas with the same name elect one active watcher (needs the kopf.dev "
             "peering CRDs). Default: --standalone."),
    standalone: bool = typer.Option(False, "--standalone", help="Run without peering (the default; one replica)."),
    sidecar_image: str = typer.Option(_I.sidecar_image, "--sidecar-image", envvar="KRESUME_SIDECAR_IMAGE",
                                      show_envvar=True, help="Image of the injected sidecar/restore containers "
                                                             "unless the CheckpointPolicy names one."),
    sidecar_resources: str = typer.Option(
        json.dumps(_I.sidecar_resources, separators=(",", ":")), "--sidecar-resources",
        envvar="KRESUME_SIDECAR_RESOURCES", show_envvar=True,
        help="core/v1 ResourceRequirements (JSON) of the injected sidecar and restore containers when the "
             "CheckpointPolicy sets no sidecar.resources; '{}': none."),
    native_sidecar: str = typer.Option(
        _I.native_sidecar, "--native-sidecar", envvar="KRESUME_NATIVE_SIDECAR", show_envvar=True,
        help="auto | always | never. auto: native sidecar (init container with restartPolicy: Always) when the "
             "API server is >= 1.29, else a regular container."),
    resolve_timeout: float = typer.Option(
        _R.timeout, "--resolve-timeout", envvar="KRESUME_RESOLVE_TIMEOUT", show_envvar=True,
        help="Seconds an admission waits for the store before injecting the last known checkpoint."),
    refresh_interval: float = typer.Option(
        _R.refresh_interval, "--refresh-interval", envvar="KRESUME_REFRESH_INTERVAL", show_envvar=True,
        help="Seconds between background refreshes of live runs (cache and CheckpointRun.status.latest)."),
    refresh_rate: float = typer.Option(
        _R.refresh_rate, "--refresh-rate", envvar="KRESUME_REFRESH_RATE", show_envvar=True,
        help="Live runs refreshed per second at most (a round of N live runs takes at least N / rate s); 0: unpaced."),
    quiet_max_age: float = typer.Option(
        _R.quiet_max_age, "--quiet-max-age", envvar="KRESUME_QUIET_MAX_AGE", show_envvar=True,
        help="Seconds an admission of a run with no running pod may be answered from memory (one bad-mark read "
             "instead of a lookup); bounds how long a commit or prune made by hand can go unseen (a mark-bad is "
             "seen at once). 0: always ask the store. Off with --peering."),
    run_ttl: float = typer.Option(
        _N.ttl_seconds, "--run-ttl", envvar="KRESUME_RUN_TTL", show_envvar=True,
        help="Delete a CheckpointRun this many seconds after its last activity when it has no live pod; 0: never."),
    event_window: float = typer.Option(
        _N.event_window, "--event-window", envvar="KRESUME_EVENT_WINDOW", show_envvar=True,
        help="Seconds: pods created longer ago get no Resumed/FreshStart Events when the operator (re)starts and "
             "lists them (a restart does not repeat old Events)."),
    log_level: str = typer.Option("INFO", "--log-level", envvar="KRESUME_LOG_LEVEL", show_envvar=True,
                                  help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run the kresume operator: the inject-pod admission webhook and CheckpointRun status."""
    if peering and standalone:
        raise typer.BadParameter("--peering and --standalone exclude each other", param_hint="--peering")
    if native_sidecar not in decisions.NATIVE_MODES:
        raise typer.BadParameter(f"{native_sidecar!r}; choose auto, always or never", param_hint="--native-sidecar")
    if not 0 < resolve_timeout <= 8:
        raise typer.BadParameter("must be > 0 and <= 8 seconds (webhooks time out at 10 s)",
                                 param_hint="--resolve-timeout")
    if not math.isfinite(refresh_rate) or refresh_rate < 0:
        raise typer.BadParameter("must be a finite number >= 0 runs per second (0: unpaced)", param_hint="--refresh-rate")
    if not math.isfinite(event_window) or event_window < 0:
        raise typer.BadParameter("must be a finite number >= 0 seconds", param_hint="--event-window")
    if not math.isfinite(quiet_max_age) or quiet_max_age < 0:
        raise typer.BadParameter("must be a finite number >= 0 seconds (0 turns answers from memory off)",
                                 param_hint="--quiet-max-age")
    resources = _resources(sidecar_resources)
    namespaces = tuple(n.strip() for item in namespace or [] for n in item.split(",") if n.strip())
    config = OperatorConfig(
        webhook=WebhookSettings(host=webhook_host, port=webhook_port, cert_file=tls_cert_file, key_file=tls_key_file),
        scope=ScopeSettings(namespaces=namespaces, peering=peering),
        probes=ProbeSettings(liveness_port=liveness_port, metrics_port=metrics_port),
        injection=InjectionSettings(sidecar_image=sidecar_image, native_sidecar=native_sidecar,
                                     sidecar_resources=resources),
        resolution=ResolutionSettings(timeout=resolve_timeout, refresh_interval=refresh_interval, refresh_rate=refresh_rate,
                                      quiet_max_age=quiet_max_age),
        runs=RunSettings(ttl_seconds=run_ttl, event_window=event_window),
    )
    configure_logging(log_level)
    from kresume.operator import runner

    try:
        runner.run(config)
    except runner.NoKubernetesCredentials as exc:
        typer.echo(f"kresume operator: error: {exc}", err=True)
        raise typer.Exit(2) from None


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The operator's log lines: local time with milliseconds (``2026-12-02 07:40:01,123``), level, logger, message;
one ``inject-pod NS/RUN: OUTCOME (checkpoint from SOURCE) in X ms`` INFO line per admission
(:mod:`kresume.operator.admission`; the demo's time line parses it)."""


def configure_logging(level: str) -> None:
    """Root logging at ``level`` (DEBUG, INFO, WARNING or ERROR) with :data:`LOG_FORMAT`, replacing any handler
    set before: run as ``kresume operator`` (the container's entrypoint), the ``kresume`` CLI's callback has
    already called ``logging.basicConfig`` at WARNING, and a second ``basicConfig`` without ``force`` is a no-op
    (Python's logging docs) — the chart's ``operator.logLevel`` and every INFO line were lost (measured on the
    real node: an empty operator log). aiohttp's access log (a line per webhook call) is at WARNING unless DEBUG."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    if level.upper() != "DEBUG":  # aiohttp's access log adds a line per webhook call; kresume's own line says more
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _resources(text: str) -> dict[str, Any]:
    """``--sidecar-resources`` as ResourceRequirements; BadParameter naming the flag and the expected shape."""
    from pydantic import ValidationError

    from kresume.policy import Resources

    try:
        res = Resources.model_validate(json.loads(text or "{}"))
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            first = f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}"
        else:
            first = str(exc)
        raise typer.BadParameter(f"{text!r} is not core/v1 ResourceRequirements as JSON, e.g. "
                                 f'{{"requests":{{"cpu":"100m","memory":"192Mi"}},"limits":{{"memory":"512Mi"}}}} '
                                 f"({first})", param_hint="--sidecar-resources") from None
    return {k: dict(v) for k, v in (("requests", res.requests), ("limits", res.limits)) if v}


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command(name="operator")(command)


def main() -> None:
    """``python -m kresume.operator``."""
    typer.run(command)
