"""``injection.validity``: the API server's limits an injection can break, and only those kresume breaks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kresume import contract
from kresume.injection import Resume, inject, validity
from kresume.policy import Policy

DATA = Path(__file__).parent / "testdata"
POLICY = Policy.from_spec({"storage": "s3://ckpts/kresume"})
RESUME = Resume(url="s3://ckpts/kresume/ns/train/checkpoints/c1/epoch=1-step=5.ckpt", checkpoint="c1",
                name="epoch=1-step=5.ckpt", step=5)


def job_pod(**annotations: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "train-", "labels": {contract.LABEL_INJECT: "true", "job-name": "train"},
                         "annotations": dict(annotations)},
            "spec": {"containers": [{"name": "trainer", "image": "python", "command": ["python", "t.py"]}]}}


def injected(pod: dict[str, Any], native: bool = False) -> dict[str, Any]:
    return inject(pod, POLICY, RESUME, run="train", namespace="ns", native_sidecar=native, image="kresume:x").pod


@pytest.mark.parametrize("path", sorted(p for p in DATA.glob("*.yaml") if p.name.count(".") == 1),
                         ids=lambda p: p.stem)
@pytest.mark.parametrize("native", [True, False])
def test_no_golden_case_is_made_invalid(path: Path, native: bool):
    pod = yaml.safe_load(path.read_text())
    try:
        out = injected(pod, native)
    except Exception:  # noqa: BLE001 - cases kresume refuses (bad annotations) change nothing
        return
    assert validity.introduced(pod, out) == []


def test_annotations_pushed_over_256_kib_are_kresumes_and_say_by_how_much():
    pod = job_pod(big="x" * (validity.ANNOTATIONS_MAX_BYTES - 100))
    [line] = validity.introduced(pod, injected(pod))
    assert line.startswith("annotations total ") and "shorten the pod's own annotations" in line
    needed = int(line.rsplit(" ", 1)[1])
    exactly = job_pod(big="x" * (validity.ANNOTATIONS_MAX_BYTES - 100 - needed))  # shortened as the line says
    assert validity.introduced(exactly, injected(exactly)) == []
    one_less = job_pod(big="x" * (validity.ANNOTATIONS_MAX_BYTES - 100 - needed + 1))
    assert validity.introduced(one_less, injected(one_less)) != []


def test_a_pod_over_the_limit_already_is_not_kresumes_problem():
    pod = job_pod(big="x" * (validity.ANNOTATIONS_MAX_BYTES + 10))
    assert "annotations-size" in validity.problems(pod)
    assert validity.introduced(pod, injected(pod)) == []


def test_a_user_container_with_kresumes_name_is_a_duplicate_in_native_mode():
    pod = job_pod()
    pod["spec"]["containers"].append({"name": contract.SIDECAR_CONTAINER_NAME, "image": "mine"})
    [line] = validity.introduced(pod, injected(pod, native=True))
    assert "two containers are named 'kresume-sidecar'" in line and "rename the pod's own one" in line


def test_an_object_too_big_for_etcd():
    pod = job_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "BLOB", "value": "y" * (validity.OBJECT_MAX_BYTES - 600)}]
    lines = validity.introduced(pod, injected(pod))
    assert any("over etcd's default request limit" in line for line in lines), lines


@pytest.mark.parametrize("mutate, key", [
    (lambda p: p["metadata"]["annotations"].update({"bad key!": "v"}), "annotation-key/bad key!"),
    (lambda p: p["metadata"]["annotations"].update({"x" * 254 + "/n": "v"}), "annotation-key/" + "x" * 254 + "/n"),
    (lambda p: p["spec"]["containers"].append({"name": "Upper"}), "container-name/Upper"),
    (lambda p: p["spec"].update(volumes=[{"name": "v"}, {"name": "v"}]), "volume-twice/v"),
    (lambda p: p["spec"]["containers"][0].update(env=[{"name": "1=x", "value": ""}]), "env/trainer/1=x"),
    (lambda p: p["spec"]["containers"][0].update(volumeMounts=[{"name": "nope", "mountPath": "/a"}]),
     "mount-volume/trainer/nope"),
])
def test_each_rule(mutate, key):
    pod = copy.deepcopy(job_pod())
    assert validity.problems(pod) == {}
    mutate(pod)
    assert key in validity.problems(pod)
