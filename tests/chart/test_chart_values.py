"""Values contract: schema refuses bad values at render, helm lint is clean, every key is documented."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest

from chart import chart_support as cs
from kresume import policy

BAD_VALUES = {
    "string replicas": ({"operator": {"replicas": "3"}}, "'/operator/replicas': got string, want integer"),
    "unknown top-level key": ({"operatr": {"replicas": 2}}, "additional properties 'operatr' not allowed"),
    "unknown nested key": ({"webhook": {"timeout": 3}}, "additional properties 'timeout' not allowed"),
    "bad storage scheme": (
        {"defaultPolicy": {"create": True, "spec": {"storage": "http://bucket/x"}}},
        "'/defaultPolicy/spec/storage': 'http://bucket/x' does not match pattern",
    ),
    "unknown policy field": (
        {"defaultPolicy": {"spec": {"storage": "s3://b/x", "keepLast": 3}}},
        "additional properties 'keepLast' not allowed",
    ),
    "webhook timeout above 5": ({"webhook": {"timeoutSeconds": 10}}, "'/webhook/timeoutSeconds': maximum"),
    "failurePolicy typo": ({"webhook": {"failurePolicy": "ignore"}}, "'/webhook/failurePolicy'"),
    "zero replicas": ({"operator": {"replicas": 0}}, "'/operator/replicas': minimum"),
    "bad nativeSidecar": ({"operator": {"nativeSidecar": "yes"}}, "'/operator/nativeSidecar'"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_wrong_values_fail_at_render_with_a_clear_message(case: str) -> None:
    values, message = BAD_VALUES[case]
    with pytest.raises(helm.HelmValuesError) as err:
        cs.render(values)
    text = str(err.value)
    assert "values don't meet the specifications of the schema" in text
    assert message in text, text


def test_resolve_timeout_must_stay_below_the_webhook_timeout() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"operator.resolveTimeout \(5 s\) must be below webhook.timeoutSeconds"):
        cs.render({"operator": {"resolveTimeout": 5}})


def test_defaults_and_matrix_pass_the_schema() -> None:
    with helm.Chart.load(str(cs.CHART)) as chart:
        chart.validate_schema({})
        for values in cs.MATRIX.values():
            chart.validate_schema(values)


def test_helm_lint_is_clean() -> None:
    for values in [None, *cs.MATRIX.values()]:
        report = helm.lint(str(cs.CHART), values, strict=True, namespace=cs.RELEASE_NS)
        serious = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and serious == [], report


def test_storage_pattern_is_the_policy_models() -> None:
    schema = json.loads((cs.CHART / "values.schema.json").read_text())
    assert schema["definitions"]["checkpointPolicySpec"]["properties"]["storage"]["pattern"] == policy.STORAGE_PATTERN


def _walk_schema(node: dict[str, Any], path: str, schema: dict[str, Any]) -> list[str]:
    """Paths of objects in the values schema that accept unknown keys (``additionalProperties`` not false)."""
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    open_objects = []
    if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
        open_objects.append(path)
    for key, child in (node.get("properties") or {}).items():
        open_objects += _walk_schema(child, f"{path}.{key}", schema)
    return open_objects


def test_every_schema_object_with_properties_refuses_unknown_keys() -> None:
    schema = json.loads((cs.CHART / "values.schema.json").read_text())
    assert _walk_schema(schema, "", schema) == []
    # Open by design, and validated by the API server instead: Kubernetes pass-through types and fsspec options.
    open_types = {k for k, v in schema["properties"]["operator"]["properties"].items()
                  if v.get("type") == "object" and "properties" not in v and "additionalProperties" not in v}  # fmt: skip
    assert open_types == {"podSecurityContext", "securityContext", "affinity"}


def _leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, val in values.items():
        path = f"{prefix}{key}"
        if isinstance(val, dict) and val and key not in {"resources", "sidecarResources", "podSecurityContext", "securityContext", "spec"}:
            out += _leaf_paths(val, path + ".")
        else:
            out.append(path)
    return out


def test_every_value_is_documented_in_values_yaml_and_readme() -> None:
    text = (cs.CHART / "values.yaml").read_text().splitlines()
    defaults = cs.render_manifests.yaml.safe_load("\n".join(text))
    # helm-docs: a `# -- ` comment directly above each leaf key (nested keys are found by indentation).
    documented, stack = set(), []
    for i, line in enumerate(text):
        m = re.match(r"^( *)([A-Za-z0-9]+):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        if i and text[i - 1].lstrip().startswith("# -- "):
            documented.add(".".join(stack))
    missing = [p for p in _leaf_paths(defaults) if p not in documented]
    assert missing == [], f"values without a `# --` comment: {missing}"
    readme = (cs.CHART / "README.md").read_text()
    readme = readme.split(cs.render_manifests.TABLE_START)[1].split(cs.render_manifests.TABLE_END)[0]
    table = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    assert documented - table == set(), f"missing from the README values table: {sorted(documented - table)}"
    assert table - documented == set(), f"README documents unknown values: {sorted(table - documented)}"
