"""CRDs: built by kresume.crds, packaged YAML in sync, structural, and in step with policy.py."""

from __future__ import annotations

import copy
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pydantic
import pytest

from kresume import contract, crds
from kresume.policy import Policy


def test_crds_yaml_files_match_module():
    assert crds.stale() == [], "run: python -m kresume.crds --write"
    for crd in crds.all_crds():
        assert crds.load(crds.file_name(crd)) == crd


def test_crds_cli_check_and_write(tmp_path):
    cmd = [sys.executable, "-m", "kresume.crds"]
    stale = subprocess.run([*cmd, "--check", str(tmp_path)], capture_output=True, text=True)
    assert stale.returncode == 1 and "stale" in stale.stderr
    assert subprocess.run([*cmd, "--write", str(tmp_path)], capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check", str(tmp_path)]).returncode == 0
    (tmp_path / "checkpointruns.kresume.dev.yaml").write_text("# edited by hand\n")
    assert subprocess.run([*cmd, "--check", str(tmp_path)], capture_output=True).returncode == 1
    printed = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert printed.count("kind: CustomResourceDefinition") == 2


@pytest.mark.parametrize("crd", crds.all_crds(), ids=lambda c: c["metadata"]["name"])
def test_crds_validate_against_k8s_openapi(crd):
    assert kubernetes_validate.validate(crd, "1.31", strict=True) == "1.31"


def test_crds_names_and_scope():
    policy, run = crds.policy_crd(), crds.run_crd()
    assert policy["metadata"]["name"] == "checkpointpolicies.kresume.dev"
    assert run["metadata"]["name"] == "checkpointruns.kresume.dev"
    for crd, short, kind in ((policy, "ckptpolicy", "CheckpointPolicy"), (run, "ckptrun", "CheckpointRun")):
        spec = crd["spec"]
        assert spec["group"] == contract.GROUP and spec["scope"] == "Namespaced"
        assert spec["names"]["shortNames"] == [short] and spec["names"]["kind"] == kind
        (version,) = spec["versions"]
        assert version["name"] == contract.VERSION and version["served"] and version["storage"]
    assert run["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert "subresources" not in policy["spec"]["versions"][0]


def test_crds_run_printer_columns():
    cols = {c["name"]: c for c in crds.run_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert [n for n, c in cols.items() if not c.get("priority")] == ["Run", "World", "Latest Step", "Pending Step",
                                                                 "Latest Age", "Restarts", "Age"]
    assert cols["Latest Age"] == {**cols["Latest Age"], "type": "date", "jsonPath": ".status.latest.committedAt"}
    assert cols["Latest Step"]["type"] == "integer" and cols["Restarts"]["jsonPath"] == ".status.restarts"
    assert cols["World"]["jsonPath"] == ".status.worldSize" and cols["Pending Step"]["jsonPath"] == ".status.pending.step"


def _walk(node, path=""):
    yield path, node
    for key, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


PRESERVE_ALLOWED = {".spec.storageOptions", ".spec.sidecar.extraEnv[].valueFrom", ".status.kopf"}


@pytest.mark.parametrize("crd", crds.all_crds(), ids=lambda c: c["metadata"]["name"])
def test_crds_schema_is_structural(crd):
    """Rules of structural schemas (Kubernetes docs, "Specifying a structural schema") we can check
    offline: every node has a type (int-or-string excepted), properties and additionalProperties
    are exclusive, and unknown fields are preserved only where they are meant to be."""
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node and node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "type" in node, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path in PRESERVE_ALLOWED, f"{path} preserves unknown fields"


def _spec_validator():
    schema = copy.deepcopy(crds.policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])
    # OpenAPI v3.0 (what CRDs use) has draft-4 style boolean exclusiveMinimum; x- keys are ignored.
    return jsonschema.Draft4Validator(schema)


PARITY = [
    ({"storage": "s3://b/p"}, True),
    ({"storage": "memory://x", "retention": {"keepLast": 1, "keepEvery": 5}}, True),
    ({"storage": "abfss://c@acct.dfs.core.windows.net/p"}, True),
    ({"storage": "file:///"}, True),
    ({"storage": "s3://b", "sidecar": {"resources": {"requests": {"cpu": "100m", "memory": 1024}}}}, True),
    ({"storage": "s3://b", "sidecar": {"extraEnv": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}, True),
    ({"storage": "s3://b", "resolveTimeoutSeconds": 0.5}, True),
    ({"storage": "http://b"}, False),
    ({"storage": "s3://"}, False),
    ({"storage": "s3://b?versionId=1"}, False),
    ({}, False),
    ({"storage": "s3://b", "retention": {"keepLast": 0}}, False),
    ({"storage": "s3://b", "retention": {"keepEvery": 0}}, False),
    ({"storage": "s3://b", "sidecar": {"concurrency": 0}}, False),
    ({"storage": "s3://b", "sidecar": {"resources": {"limits": {"memory": "1 GB"}}}}, False),
    ({"storage": "s3://b", "sidecar": {"resources": {"limits": {"cpu": 0.5}}}}, False),
    ({"storage": "s3://b", "sidecar": {"imagePullPolicy": "Sometimes"}}, False),
    ({"storage": "s3://b", "sidecar": {"extraEnv": [{"value": "x"}]}}, False),
    ({"storage": "s3://b", "credentialsSecret": "Not_A_Name"}, False),
    ({"storage": "s3://b", "resolveTimeoutSeconds": 0}, False),
    ({"storage": "s3://b", "resolveTimeoutSeconds": 9}, False),
]


@pytest.mark.parametrize("spec, ok", PARITY, ids=[str(i) for i in range(len(PARITY))])
def test_crds_policy_schema_agrees_with_model(spec, ok):
    errors = list(_spec_validator().iter_errors(spec))
    assert (errors == []) == ok, errors
    if ok:
        Policy.from_spec(spec)
    else:
        with pytest.raises(pydantic.ValidationError):
            Policy.from_spec(spec)


def test_crds_policy_defaults_match_model():
    spec = crds.policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    model = Policy(storage="s3://b").to_spec()
    assert spec["retention"]["properties"]["keepLast"]["default"] == model["retention"]["keepLast"]
    assert spec["sidecar"]["properties"]["concurrency"]["default"] == model["sidecar"]["concurrency"]
    assert spec["restore"]["default"] == model["restore"]
    assert spec["resolveTimeoutSeconds"]["default"] == model["resolveTimeoutSeconds"]
    # every model field has a schema property (camelCase), and nothing more
    assert set(spec) == set(Policy.model_json_schema(by_alias=True)["properties"])
