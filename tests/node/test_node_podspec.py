"""Pure rules of the dev node: env order and $(VAR) expansion as kubelet does them, commands, mounts."""

from __future__ import annotations

import pytest

from kresume.devtools.node import podspec

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "a"}},
       "spec": {"nodeName": "n"}, "status": {"podIP": "10.0.0.5"}}
SECRETS = {("ns", "s"): {"KEY": "v", "9BAD": "x"}}
MAPS = {("ns", "c"): {"A": "1"}}


def _env(container):
    return podspec.resolve_env(POD, container, secrets=lambda ns, n: SECRETS.get((ns, n)),
                               configmaps=lambda ns, n: MAPS.get((ns, n)))


def test_envfrom_first_then_env_in_order_with_expansion_of_earlier_names_only():
    env = _env({"envFrom": [{"secretRef": {"name": "s"}}, {"configMapRef": {"name": "c"}, "prefix": "C_"}],
                "env": [{"name": "X", "value": "$(KEY)-$(LATER)-$$(KEY)-$(C_A)"}, {"name": "LATER", "value": "l"},
                        {"name": "KEY", "value": "override"},
                        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}]})
    assert env == {"KEY": "override", "C_A": "1", "X": "v-$(LATER)-$(KEY)-1", "LATER": "l", "L": "a"}
    assert "9BAD" not in env  # not a valid env name: skipped like kubelet


def test_missing_required_secret_is_a_config_error_and_optional_is_skipped():
    with pytest.raises(podspec.ContainerConfigError, match="ns/nope"):
        _env({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]})
    assert _env({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "no", "optional": True}}}],
                 "envFrom": [{"configMapRef": {"name": "nope", "optional": True}}]}) == {}


def test_command_expands_against_final_env_and_requires_a_command():
    assert podspec.command_line({"command": ["echo", "$(A)"], "args": ["$(B)", "$$(A)"]}, {"A": "1"}) == \
        ["echo", "1", "$(B)", "$(A)"]
    with pytest.raises(podspec.ContainerConfigError, match="ignores images"):
        podspec.command_line({"name": "c", "args": ["x"]}, {})


def test_mounts_map_volumes_and_refuse_escapes():
    dirs = {"v": "/host/v"}
    assert podspec.mounts({"volumeMounts": [{"name": "v", "mountPath": "/ckpt", "subPath": "a"}]}, dirs) == \
        [podspec.Mount("/host/v/a", "/ckpt")]
    for bad in ({"name": "w", "mountPath": "/x"}, {"name": "v", "mountPath": "rel"},
                {"name": "v", "mountPath": "/x", "subPath": "../up"}):
        with pytest.raises(podspec.ContainerConfigError):
            podspec.mounts({"volumeMounts": [bad]}, dirs)
