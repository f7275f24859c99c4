"""Shared helpers of the chart tests (``from chart import chart_support``): the values matrix, rendering with the real Helm SDK, and the render script.

Rendering goes through ``scripts/render-manifests`` (loaded as a module), so the tests and the checked-in
manifests use one code path: PyPI ``helm-python-sdk`` (Helm v4's Go SDK as a shared library).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kresume"
SCRIPT = ROOT / "scripts" / "render-manifests"
RELEASE_NS = "kresume-system"


def load_script() -> ModuleType:
    """``scripts/render-manifests`` as a module (it has no ``.py`` suffix, so a SourceFileLoader is needed)."""
    loader = importlib.machinery.SourceFileLoader("render_manifests", str(SCRIPT))
    spec = importlib.util.spec_from_loader("render_manifests", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


render_manifests = load_script()

#: The values matrix of issue 5: name -> values.
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"certManager": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}},
    "replicas-3": {"operator": {"replicas": 3}},
    "replicas-3-namespaced": {"operator": {"replicas": 3, "namespaces": ["team-a", "team-b"]}},
    "custom-policy": {
        "defaultPolicy": {
            "create": True,
            "namespaces": ["team-a", "team-b"],
            "spec": {
                "storage": "gs://ml-checkpoints/kresume",
                "storageOptions": {"project": "ml"},
                "credentialsSecret": "gcs-credentials",
                "retention": {"keepLast": 5, "keepEvery": 1000},
                "sidecar": {"concurrency": 8, "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}}},
                "restore": True,
            },
        }
    },
    "crds-off": {"crds": {"install": False}},
    "network-policy": {"networkPolicy": {
        "enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]}},
}

#: Kinds that are custom resources of other projects or of kresume: not in the Kubernetes core schemas.
CUSTOM_KINDS = {
    "Issuer": "cert-manager.io",
    "Certificate": "cert-manager.io",
    "ServiceMonitor": "monitoring.coreos.com",
    "CheckpointPolicy": "kresume.dev",
    "ClusterKopfPeering": "kopf.dev",
    "KopfPeering": "kopf.dev",
}


def render(values: dict[str, Any] | None = None, *, name: str = "kresume", namespace: str = RELEASE_NS) -> (
    dict[str, str]
):
    """Template path -> rendered text (empty renders and NOTES.txt dropped)."""
    return render_manifests.render_chart(values or {}, name=name, namespace=namespace)


def objects(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Every rendered object of a render."""
    return [obj for _, obj in render_manifests.documents(render(values, **kw))]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Objects of one kind."""
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of ``kind``; fails the test if there is not exactly one."""
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]
