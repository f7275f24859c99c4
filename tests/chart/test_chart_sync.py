"""Generated chart parts and manifests/ equal a fresh generation; the check notices drift.

Regenerate with ``.venv/bin/python scripts/render-manifests`` (``--check`` is what CI runs).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from chart import chart_support as cs
from kresume import crds

rm = cs.render_manifests


def test_chart_generated_parts_are_fresh() -> None:
    stale = rm.stale(rm.chart_files())
    assert stale == [], f"stale: {stale}; run {rm.COMMAND}"


def test_manifests_equal_a_fresh_render() -> None:
    stale = rm.stale(rm.manifest_files())
    assert stale == [], f"stale: {stale}; run {rm.COMMAND}"


def test_check_fails_on_drift(tmp_path: Path) -> None:
    wanted = {tmp_path / "a.yaml": "kind: X\n", tmp_path / "b.yaml": "kind: Y\n"}
    assert rm.stale(wanted) == list(wanted)  # missing files are stale
    assert rm.write(wanted) == list(wanted) and rm.stale(wanted) == []
    (tmp_path / "b.yaml").write_text("kind: Y\n# hand edit\n")
    assert rm.stale(wanted) == [tmp_path / "b.yaml"]
    # And the real files: a hand edit of a generated CRD template is caught.
    name = "checkpointruns.kresume.dev.yaml"
    real = rm.crd_templates()[name]
    assert rm.stale({tmp_path / name: real.replace("maxLength", "maxlength", 1)}) == [tmp_path / name]
    assert rm.main(["--check"]) == 0


def test_rendered_crds_are_the_package_crds() -> None:
    rendered = {o["metadata"]["name"]: o for o in cs.by_kind(cs.objects(), "CustomResourceDefinition")}
    for crd in crds.all_crds():
        got = rendered[crd["metadata"]["name"]]
        assert got["spec"] == crd["spec"]
        assert got["apiVersion"] == crd["apiVersion"]
        assert crd["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
    # the checked-in package YAML is what the module builds, so the chart, the package and kubectl agree
    for name, text in crds.files().items():
        assert yaml.safe_load(text)["spec"] == rendered[name.removesuffix(".yaml")]["spec"]


def test_manifests_are_the_default_render_minus_secrets_and_tests() -> None:
    objs = [o for text in rm.manifests().values() for o in yaml.safe_load_all(text) if o]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted([
        "Namespace", "CustomResourceDefinition", "CustomResourceDefinition", "Deployment", "ClusterRole",
        "ClusterRoleBinding", "ServiceAccount", "MutatingWebhookConfiguration", "Service"])  # fmt: skip
    (hook,) = [o for o in objs if o["kind"] == "MutatingWebhookConfiguration"][0]["webhooks"]
    assert "caBundle" not in hook["clientConfig"]
    assert all(o["metadata"].get("namespace", rm.NAMESPACE) == rm.NAMESPACE for o in objs)
    text = "".join(rm.manifests().values())
    assert "LS0tLS1CRUdJTi" not in text and "BEGIN" not in text  # no PEM, plain or base64
