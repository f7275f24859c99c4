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


def test_host_path_follows_the_deepest_bind_target():
    binds = [podspec.Mount("/host/v", "/data"), podspec.Mount("/host/w", "/data/inner")]
    assert podspec.host_path("/data/a/b", binds) == "/host/v/a/b"
    assert podspec.host_path("/data/inner/x", binds) == "/host/w/x"
    assert podspec.host_path("/data", binds) == "/host/v"
    assert podspec.host_path("/database/x", binds) == "/database/x"  # a prefix of the name is not a parent
    assert podspec.host_path("/usr/bin/../bin/sh", []) == "/usr/bin/sh"


@pytest.mark.parametrize(("paths", "keep"), [
    (["/tmp/x/.venv/bin/python", "/tmp/x/src", "/tmp/x/examples/train.py"], ("/tmp/x",)),
    (["/tmp/my dir/.venv/bin", "/tmp/train.py", "/usr/bin/python3"], ("/tmp/my dir", "/tmp/train.py")),
    (["/tmp", "/tmp/", "relative/tmp/x", "/tmpfoo/x", "/var/tmp/x"], ()),
    (["/tmp/a/../b/c", "/tmp/./d"], ("/tmp/b", "/tmp/d")),
])
def test_tmp_entries_to_keep_are_the_top_level_entries_of_needed_paths(paths, keep):
    assert podspec.tmp_entries_to_keep(paths) == keep


def test_tmp_entries_under_a_bind_target_are_not_kept():
    # /tmp/vol is a volume: its files are visible through the bind, not through the host's /tmp.
    assert podspec.tmp_entries_to_keep(["/tmp/vol/x"], [podspec.Mount("/host/v", "/tmp/vol")]) == ()


def test_mount_script_binds_kept_entries_into_the_private_tmp_before_it_replaces_tmp():
    script = podspec.mount_script([podspec.Mount("/tmp/w/vol", "/ckpt", read_only=True)], "/tmp/my dir",
                                  podspec.PrivateTmp("/tmp/w/tmp/c", ("/tmp/my dir", "/tmp/w")))
    assert script.splitlines() == [
        "set -e",
        "mount --bind /tmp/w/vol /ckpt",  # volumes first: their folders may be under the host's /tmp
        "mount -o remount,bind,ro /ckpt",
        "mount --bind '/tmp/my dir' '/tmp/w/tmp/c/my dir'",
        "mount --bind /tmp/w /tmp/w/tmp/c/w",  # an ancestor of the private folder itself is fine (no rbind)
        "mount --rbind /tmp/w/tmp/c /tmp",
        "cd '/tmp/my dir'",
        'exec "$@"',
    ]
    assert podspec.mount_script([], None).splitlines() == ["set -e", 'exec "$@"']
