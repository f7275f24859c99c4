"""inject's refusals and edge rules that goldens do not show one by one."""

from __future__ import annotations

import copy

import pytest

from kresume import contract
from kresume.injection import InjectionError, Resume, inject
from kresume.injection.sidecar_spec import grace_seconds
from kresume.policy import Policy

POLICY = Policy(storage="s3://b/p")
RESUME = Resume(url="s3://b/p/ns/r/checkpoints/1/a.ckpt", checkpoint="1", name="a.ckpt", step=7)


def pod(annotations=None, containers=None, volumes=None, init=None, **spec):
    p = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "x-", "annotations": annotations or {}},
        "spec": {"containers": containers or [{"name": "main", "image": "i"}], **spec},
    }
    if volumes is not None:
        p["spec"]["volumes"] = volumes
    if init is not None:
        p["spec"]["initContainers"] = init
    return p


def run(p, resume=RESUME, native=True, policy=POLICY, run="r", namespace="ns"):
    return inject(p, policy, resume, run=run, namespace=namespace, native_sidecar=native, image="img")


@pytest.mark.parametrize(
    "annotations, reason, words",
    [
        ({contract.ANN_CHECKPOINT_DIR: "relative/dir"}, "InvalidAnnotation", [contract.ANN_CHECKPOINT_DIR, "absolute"]),
        ({contract.ANN_CHECKPOINT_DIR: "/a/../etc"}, "InvalidAnnotation", ["'..'"]),
        ({contract.ANN_CHECKPOINT_DIR: "/"}, "InvalidAnnotation", ["other than '/'"]),
        ({contract.ANN_CHECKPOINT_DIR: "/ckpt/"}, "InvalidAnnotation", ["trailing"]),
        ({contract.ANN_CHECKPOINT_DIR: "/c:d"}, "InvalidAnnotation", ["':'"]),
        ({contract.ANN_VOLUME: "nope"}, "InvalidAnnotation", [contract.ANN_VOLUME, "'nope'", "volumes: none"]),
        ({contract.ANN_CONTAINERS: "main,ghost"}, "InvalidAnnotation", ["ghost", "containers: main"]),
        ({contract.ANN_CONTAINERS: " , "}, "InvalidAnnotation", ["empty list"]),
        ({contract.ANN_CONTAINERS: contract.SIDECAR_CONTAINER_NAME}, "InvalidAnnotation", [contract.SIDECAR_CONTAINER_NAME]),
        ({contract.ANN_RESTORE: "maybe"}, "InvalidAnnotation", [contract.ANN_RESTORE, "true or false"]),
    ],
)
def test_injection_refuses_bad_annotations(annotations, reason, words):
    with pytest.raises(InjectionError) as info:
        run(pod(annotations))
    assert info.value.reason == reason
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("run_name, namespace", [("../x", "ns"), ("a/b", "ns"), ("r", "../kube-system"), ("s3:", "ns")])
def test_injection_refuses_unsafe_run(run_name, namespace):
    with pytest.raises(InjectionError) as info:
        run(pod(), run=run_name, namespace=namespace)
    assert info.value.reason == "InvalidRun"


def test_injection_marker_short_circuits_and_returns_copy():
    p = pod({contract.ANN_INJECTED: "native"})
    result = run(p)
    assert result.changed is False and result.pod == p and result.pod is not p and result.warnings == ()
    result.pod["spec"]["containers"].append({})
    assert len(p["spec"]["containers"]) == 1  # a deep copy


def test_injection_no_resume_means_no_resume_env_and_none_annotation():
    out = run(pod(), resume=None).pod
    names = [e["name"] for e in out["spec"]["containers"][0]["env"]]
    assert names == [contract.ENV_CHECKPOINT_DIR, contract.ENV_RUN_URL]
    assert out["metadata"]["annotations"][contract.ANN_RESUMED_FROM] == "none"
    assert contract.ANN_RESUMED_STEP not in out["metadata"]["annotations"]


def test_injection_policy_restore_default_and_annotation_off():
    policy = Policy(storage="s3://b/p", restore=True)
    on = run(pod(), policy=policy).pod
    assert [c["name"] for c in on["spec"]["initContainers"]] == [contract.RESTORE_CONTAINER_NAME, contract.SIDECAR_CONTAINER_NAME]
    off = run(pod({contract.ANN_RESTORE: "false"}), policy=policy).pod
    assert [c["name"] for c in off["spec"]["initContainers"]] == [contract.SIDECAR_CONTAINER_NAME]
    assert all(e["name"] != contract.ENV_RESUME_PATH for e in off["spec"]["containers"][0]["env"])


def test_injection_legacy_restore_appended_after_user_init():
    out = run(pod({contract.ANN_RESTORE: "true"}, init=[{"name": "setup", "image": "i"}]), native=False).pod
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["setup", contract.RESTORE_CONTAINER_NAME]
    assert [c["name"] for c in out["spec"]["containers"]] == ["main", contract.SIDECAR_CONTAINER_NAME]
    assert "restartPolicy" not in out["spec"]["containers"][1]


def test_injection_mount_conflict_warns_and_keeps_user_mount():
    containers = [
        {"name": "a", "image": "i", "volumeMounts": [{"name": "pvc", "mountPath": "/checkpoints"}]},
        {"name": "b", "image": "i", "volumeMounts": [{"name": "other", "mountPath": "/checkpoints"}]},
    ]
    vols = [{"name": "pvc", "emptyDir": {}}, {"name": "other", "emptyDir": {}}]
    result = run(pod(containers=containers, volumes=vols))
    assert any("'b'" in w and "'other'" in w for w in result.warnings)
    b = result.pod["spec"]["containers"][1]
    assert b["volumeMounts"] == [{"name": "other", "mountPath": "/checkpoints"}]
    assert result.pod["spec"]["volumes"] == vols  # no emptyDir added: the PVC is reused


def test_injection_annotated_volume_with_explicit_dir_mounts_it_there():
    ann = {contract.ANN_VOLUME: "v", contract.ANN_CHECKPOINT_DIR: "/ckpt"}
    out = run(pod(ann, volumes=[{"name": "v", "emptyDir": {}}])).pod
    assert out["spec"]["containers"][0]["volumeMounts"] == [{"name": "v", "mountPath": "/ckpt"}]
    assert out["spec"]["initContainers"][0]["volumeMounts"] == [{"name": "v", "mountPath": "/ckpt"}]


def test_injection_user_fields_not_removed_or_reordered():
    p = pod(
        containers=[{"name": "main", "image": "i", "env": [{"name": "Z", "value": "1"}, {"name": "A", "value": "2"}],
                     "volumeMounts": [{"name": "x", "mountPath": "/x"}]}],
        volumes=[{"name": "x", "emptyDir": {}}],
        init=[{"name": "i2", "image": "i"}, {"name": "i1", "image": "i"}],
    )
    before = copy.deepcopy(p)
    out = run(p).pod
    c = out["spec"]["containers"][0]
    assert c["env"][:2] == before["spec"]["containers"][0]["env"]
    assert c["volumeMounts"][:1] == before["spec"]["containers"][0]["volumeMounts"]
    assert out["spec"]["initContainers"][:2] == before["spec"]["initContainers"]
    assert out["spec"]["volumes"][:1] == before["spec"]["volumes"]
    assert p == before


@pytest.mark.parametrize("tgps, expected", [(None, 25), (30, 25), (10, 8), (3, 3), (0, 0), (120, 115), (1, 1)])
def test_injection_grace_seconds(tgps, expected):
    spec = {} if tgps is None else {"terminationGracePeriodSeconds": tgps}
    assert grace_seconds(spec, POLICY) == expected


def test_injection_grace_seconds_policy_wins():
    assert grace_seconds({"terminationGracePeriodSeconds": 600}, Policy(storage="s3://b", sidecar={"graceSeconds": 42})) == 42


def test_injection_sidecar_runs_as_trainer_uid():
    containers = [{"name": "main", "image": "i", "securityContext": {"runAsUser": 1234, "runAsGroup": 99}}]
    sc = run(pod(containers=containers)).pod["spec"]["initContainers"][0]["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"], sc["readOnlyRootFilesystem"]) == (1234, 99, True, True)
    sc = run(pod(securityContext={"runAsUser": 0})).pod["spec"]["initContainers"][0]["securityContext"]
    assert "runAsNonRoot" not in sc


def test_injection_resolve_error_annotation():
    out = inject(pod(), POLICY, None, run="r", namespace="ns", native_sidecar=True, image="img", resolve_error="timeout after 2.0 s").pod
    assert out["metadata"]["annotations"][contract.ANN_RESOLVE_ERROR] == "timeout after 2.0 s"


def test_injection_policy_image_overrides_operator_image():
    policy = Policy(storage="s3://b", sidecar={"image": "mine:1"})
    assert run(pod(), policy=policy).pod["spec"]["initContainers"][0]["image"] == "mine:1"
    assert run(pod()).pod["spec"]["initContainers"][0]["image"] == "img"


def test_injection_resume_from_real_store_round_trip(tmp_path):
    """Resume.from_resolved maps the store's real `latest` (memory://), and restore lands at
    <dir>/<name>, which is what KRESUME_RESUME_PATH points to."""
    from kresume.policy import run_url
    from kresume.store.runstore import RunStore

    ckpt = tmp_path / "epoch=0-step=12.ckpt"
    ckpt.write_bytes(b"not really a zip, but the store does not care" * 10)
    policy = Policy(storage="memory://bucket/p")
    url = run_url(policy, "ns", "r")
    store = RunStore.open(url)
    store.commit(ckpt)
    resume = Resume.from_resolved(store.latest())
    assert resume.name == ckpt.name and resume.url.startswith(url) and resume.url.endswith(ckpt.name)
    out = run(pod({contract.ANN_RESTORE: "true"}), resume=resume, policy=policy).pod
    restore = out["spec"]["initContainers"][0]
    assert restore["args"][:4] == [url, "/checkpoints", "--checkpoint", resume.checkpoint]
    env = {e["name"]: e.get("value") for e in out["spec"]["containers"][0]["env"]}
    dest = tmp_path / "restored"
    landed = store.restore(dest, resume.checkpoint)
    assert landed == dest / resume.name
    assert env[contract.ENV_RESUME_PATH] == "/checkpoints/" + resume.name
