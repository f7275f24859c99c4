"""The Helm chart (``charts/kresume``) rendered with the Helm SDK, and the facts tests and the demo take from it.

One source: the operator's RBAC rules and its ``MutatingWebhookConfiguration`` live in the chart's templates.
Tests, the demo and the benchmarks that run the operator as a local process against a real API server install
*those* objects, read from a render, with only what cannot be the same locally changed:

* :func:`rbac_manifests` — the chart's ``ClusterRole`` rules, bound to a ServiceAccount of the caller's choice;
* :func:`webhook_configuration` — the chart's webhook (failurePolicy, rules, objectSelector, namespaceSelector,
  timeout, reinvocation…) with a URL client config ``https://127.0.0.1:<port>/inject-pod`` and the caller's CA,
  optionally narrowed to labelled namespaces.

Rendering goes through PyPI ``helm-python-sdk`` (Helm v4's Go SDK as a shared library; a ``dev`` extra), imported
on first use; ``scripts/render-manifests`` uses the same :func:`render_chart`. A render takes about 0.5 s, so
results are cached per values.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import yaml

#: The chart in the repository (the dev tools run from a checkout).
CHART = Path(__file__).resolve().parents[3] / "charts" / "kresume"
#: Release name and namespace of the reference render (the ones ``manifests/`` uses).
RELEASE, NAMESPACE = "kresume", "kresume-system"


def render_chart(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> (
    dict[str, str]
):
    """Render the chart offline with the Helm SDK: template path -> text (empty renders and NOTES.txt dropped).

    Raises ``helm_python.HelmValuesError`` when the values break ``values.schema.json`` (Helm validates before
    rendering) and ``helm_python.HelmRenderError`` when a template ``fail``s.
    """
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    return {path: text for path, text in sorted(rendered.items()) if text.strip() and not path.endswith("NOTES.txt")}


def documents(rendered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(template path, object) for every non-empty YAML document of a render, in template order."""
    out = []
    for path, text in rendered.items():
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


@functools.lru_cache(maxsize=8)
def _objects(values_json: str) -> tuple[dict[str, Any], ...]:
    return tuple(obj for _, obj in documents(render_chart(json.loads(values_json))))


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object of a render with ``values`` (deep copies: callers may change them)."""
    return copy.deepcopy(list(_objects(json.dumps(values or {}, sort_keys=True))))


def _one(kind: str, values: dict[str, Any] | None) -> dict[str, Any]:
    found = [o for o in objects(values) if o.get("kind") == kind]
    if len(found) != 1:
        raise LookupError(f"the chart renders {len(found)} {kind} objects with values {values or {}}; expected one")
    return found[0]


def rbac_rules(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The operator's ``ClusterRole`` rules as the chart renders them (with ``values``, default: the defaults)."""
    return list(_one("ClusterRole", values)["rules"])


def rbac_manifests(namespace: str, serviceaccount: str, name: str, *,
                   values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A ``ClusterRole`` named ``name`` with the chart's rules, bound to ``system:serviceaccount:<ns>:<sa>``."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": rbac_rules(values)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": serviceaccount, "namespace": namespace}]},
    ]


def webhook_configuration(name: str, port: int, ca_bundle: str, *, namespace_labels: dict[str, str] | None = None,
                          timeout_seconds: int | None = None, values: dict[str, Any] | None = None,
                          host: str = "127.0.0.1") -> dict[str, Any]:
    """The chart's ``MutatingWebhookConfiguration`` for an operator listening on ``https://<host>:<port>``.

    Everything comes from the render except: the object's name (``name``: cluster-scoped, so tests must not
    collide), the client config (a URL with the chart's Service path instead of the Service, and ``ca_bundle``,
    base64 PEM), ``namespace_labels`` added as ``matchLabels`` to the chart's ``namespaceSelector`` (so a shared
    test cluster sends only one test's namespaces), and ``timeout_seconds`` when given (a loaded 2-core machine
    may need the API maximum, 10, where the chart sets 5).
    """
    obj = _one("MutatingWebhookConfiguration", values)
    labels = {k: v for k, v in (obj.get("metadata") or {}).get("labels", {}).items()}
    obj["metadata"] = {"name": name, "labels": labels}
    for hook in obj["webhooks"]:
        path = ((hook.get("clientConfig") or {}).get("service") or {}).get("path") or "/"
        hook["clientConfig"] = {"url": f"https://{host}:{port}{path}", "caBundle": ca_bundle}
        if namespace_labels:
            selector = hook.setdefault("namespaceSelector", {})
            selector["matchLabels"] = {**(selector.get("matchLabels") or {}), **namespace_labels}
        if timeout_seconds is not None:
            hook["timeoutSeconds"] = timeout_seconds
    return obj
