"""Pure sidecar decisions: scheduling, backoff, grace fit, settings from env, fs-type detection, keys."""

from __future__ import annotations

import pytest

from kresume.formats.listing import Entry
from kresume.formats.units import find_units
from kresume.sidecar import scheduling
from kresume.sidecar.discovery import fs_type_for, is_network_fs, parse_mounts
from kresume.sidecar.tasks import committed_key, unit_key
from kresume.sidecar.settings import SettingsError, from_env
from kresume.store.manifest import FileEntry, Manifest
from kresume.store.storage import backoff

C = scheduling.Candidate


def test_pick_next_newest_first_within_limits():
    pend = [C("a", 1, 100), C("b", 3, 100), C("c", 2, 100)]
    kw = dict(inflight_count=0, inflight_bytes=0, concurrency=2, max_inflight_bytes=150, now=10.0)
    assert scheduling.pick_next(pend, **kw).key == "b"
    # a second upload must fit the byte budget; the newest waits rather than an older overtaking it
    assert scheduling.pick_next(pend, **{**kw, "inflight_count": 1, "inflight_bytes": 100}) is None
    assert scheduling.pick_next(pend, **{**kw, "inflight_count": 2}) is None
    # one checkpoint larger than the budget still runs alone
    assert scheduling.pick_next([C("big", 1, 10**12)], **kw).key == "big"
    # backoff: not before its time
    assert scheduling.pick_next([C("x", 5, 1, not_before=11.0), C("y", 4, 1)], **kw).key == "y"


def test_superseded():
    assert [c.key for c in scheduling.superseded([C("a", 1, 1), C("b", 5, 1)], 5)] == ["a"]


def test_backoff_full_jitter_bounds():
    assert backoff(0, 1.0, 60, rand=lambda: 1.0) == 1.0
    assert backoff(3, 1.0, 60, rand=lambda: 1.0) == 8.0
    assert backoff(10, 1.0, 60, rand=lambda: 1.0) == 60
    assert backoff(3, 1.0, 60, rand=lambda: 0.0) == 0.0


def test_fits_and_bandwidth():
    assert scheduling.fits(100, None, 1.0)  # nothing measured: try
    assert not scheduling.fits(100, None, 0.0)
    assert scheduling.fits(100 * 2**20, 100 * 2**20, 2.0)
    assert not scheduling.fits(100 * 2**20, 10 * 2**20, 2.0)
    bw = scheduling.Bandwidth(alpha=0.5)
    bw.add(100, 0.01)  # too short to measure
    assert bw.value is None
    bw.add(1000, 1.0)
    bw.add(3000, 1.0)
    assert bw.value == 2000


def test_settings_from_env_and_flags():
    env = {"KRESUME_RUN_URL": "s3://b/p/ns/run/", "KRESUME_WATCH": "/ckpt", "KRESUME_GRACE_SECONDS": "40",
           "KRESUME_STORAGE_OPTIONS": '{"endpoint_url": "http://x"}', "KRESUME_KEEP_LAST": "3",
           "KRESUME_INCLUDE": "*.ckpt, *.pt", "KRESUME_SKIP_SUPERSEDED": "true", "KRESUME_CONCURRENCY": "4"}
    s = from_env(env, watch="/flag").validate()
    assert (s.run_url, s.watch, s.grace_seconds, s.keep_last, s.concurrency) == ("s3://b/p/ns/run/", "/flag", 40.0, 3, 4)
    assert s.storage_options == {"endpoint_url": "http://x"} and s.include == ("*.ckpt", "*.pt") and s.skip_superseded
    with pytest.raises(SettingsError, match="KRESUME_GRACE_SECONDS"):
        from_env({"KRESUME_GRACE_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="KRESUME_STORAGE_OPTIONS"):
        from_env({"KRESUME_STORAGE_OPTIONS": "[1]"})
    with pytest.raises(SettingsError, match="--run-url"):
        from_env({}).validate()
    with pytest.raises(SettingsError, match="--keep-last"):
        from_env({"KRESUME_RUN_URL": "memory://x", "KRESUME_KEEP_LAST": "0"}).validate()


MOUNTS = """overlay / overlay rw 0 0
proc /proc proc rw 0 0
/dev/sda1 /checkpoints ext4 rw 0 0
10.0.0.2:/export /mnt/nfs nfs4 rw 0 0
gcsfuse /mnt/gcs fuse.gcsfuse rw 0 0
/dev/sdb /mnt/with\\040space xfs rw 0 0
"""


def test_fs_type_detection():
    m = parse_mounts(MOUNTS)
    assert fs_type_for("/checkpoints/run1", m) == "ext4"
    assert fs_type_for("/checkpointsX", m) == "overlay"
    assert fs_type_for("/mnt/nfs/a/b", m) == "nfs4"
    assert fs_type_for("/mnt/gcs", m) == "fuse.gcsfuse"
    assert fs_type_for("/mnt/with space/x", m) == "xfs"
    assert is_network_fs("nfs4") and is_network_fs("fuse.gcsfuse") and is_network_fs("cifs")
    assert not is_network_fs("ext4") and not is_network_fs("overlay") and not is_network_fs("tmpfs")


def test_unit_and_manifest_keys_match():
    listing = {"c": Entry("c", "dir"),
               "c/checkpoint-5": Entry("c/checkpoint-5", "dir"),
               "c/checkpoint-5/a.json": Entry("c/checkpoint-5/a.json", "file", size=3, mtime_ns=7),
               "c/checkpoint-5/sub": Entry("c/checkpoint-5/sub", "dir"),
               "c/checkpoint-5/sub/b.pt": Entry("c/checkpoint-5/sub/b.pt", "file", size=9, mtime_ns=9),
               "x.ckpt": Entry("x.ckpt", "file", size=4, mtime_ns=11)}
    units = {u.rel: u for u in find_units(listing).units}
    m = Manifest(id="i", name="checkpoint-5", kind="dir", format="hf", step=5, epoch=None,
                 files=(FileEntry("sub/b.pt", 9, "0"), FileEntry("a.json", 3, "0")), source={"mtime_ns": 9})
    assert unit_key(units["c/checkpoint-5"]) == committed_key(m)
    f = Manifest(id="j", name="x.ckpt", kind="file", format="torch", step=None, epoch=None,
                 files=(FileEntry("", 4, "0"),), source={"mtime_ns": 11})
    assert unit_key(units["x.ckpt"]) == committed_key(f)
    assert committed_key(Manifest(id="k", name="x.ckpt", kind="file", format="torch", step=None, epoch=None,
                                 files=(FileEntry("", 4, "0"),))) is None


def test_cli_options_are_flags_of_settings_fields_and_env_is_read_once():
    """Env is read by ``settings.from_env`` only: no typer option reads env itself (issue 13 item 3)."""
    import inspect
    from dataclasses import fields

    from kresume.sidecar import cli
    from kresume.sidecar.settings import SidecarSettings, env_name

    names = {f.name for f in fields(SidecarSettings)}
    for name, param in inspect.signature(cli.command).parameters.items():
        assert name in names, f"--{name} is not a SidecarSettings field"
        assert param.default.envvar is None, f"--{name} reads env itself"
        assert f"(env: {env_name(name)})" in param.default.help
