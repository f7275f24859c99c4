"""What a captured file may and may not do before its commit (issue 11 item 8), on moto S3.

- A same-size rewrite that sets the mtime back (``rsync --inplace -t``) aborts the commit: the
  ctime cannot be set back.
- An unlink during the upload does not (Lightning deletes the previous checkpoint right after the
  next save, writers.md §2): the open descriptor still reads the whole file.
- Nor does a change of metadata alone whose bytes still have the CRC-32C sent: fsspec's atomic save
  renames, then chmods; ``shutil.move`` across file systems copies, then sets the mtime back
  (``copystat``). The manifest records the new mtime, so the sidecar does not upload the file again.
- A checkpoint refused as unreadable (mode 0600, another uid: writers.md §4) is judged again when
  its permissions or owner change. The sidecar runs as root without CAP_DAC_OVERRIDE and
  CAP_DAC_READ_SEARCH (``setpriv``), so file modes bind it as they bind another uid.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from kresume.store import errors
from kresume.store.local import snapshot


def _ckpt(path, step: int, mib: float) -> None:
    torch.save({"w": torch.randn(int(mib * 2**18)), "global_step": step}, path)


def test_same_size_rewrite_with_mtime_set_back_aborts_the_commit(tmp_path, moto_run):
    store = moto_run[3]
    path = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(path, 10, 20)
    st = os.stat(path)
    rewritten = []

    def rewrite_once(_n: int) -> None:
        if rewritten:
            return
        with open(path, "r+b") as f:  # same size, other bytes, in place: bytes already sent
            f.write(os.urandom(4096))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what rsync -t does
        rewritten.append(True)
        assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_size == st.st_size

    with snapshot(path) as captured, pytest.raises(errors.SourceChanged, match="mtime set back"):
        store.commit(captured, progress=rewrite_once)
    assert rewritten
    assert store.list() == [] and store.read_pointer() is None


def test_unlink_during_upload_still_commits_the_whole_file(tmp_path, moto_run):
    store = moto_run[3]
    path = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(path, 10, 20)
    data = path.read_bytes()

    def unlink_once(_n: int) -> None:
        if path.exists():
            path.unlink()

    with snapshot(path) as captured:
        manifest = store.commit(captured, progress=unlink_once)
    assert not path.exists()
    restored = store.restore(tmp_path / "restored", manifest.id)
    assert restored.read_bytes() == data


def test_chmod_after_capture_commits_the_upload(tmp_path, moto_run):
    store = moto_run[3]
    path = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(path, 10, 20)
    os.chmod(path, 0o600)  # tempfile.mkstemp's mode, before fsspec's LocalFileOpener.commit chmods it
    data = path.read_bytes()

    def chmod_once(_n: int) -> None:
        if os.stat(path).st_mode & 0o777 == 0o600:
            os.chmod(path, 0o644)

    with snapshot(path) as captured:
        manifest = store.commit(captured, progress=chmod_once)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [m.id for m in store.list()] == [manifest.id]
    assert store.restore(tmp_path / "restored", manifest.id).read_bytes() == data


def test_copystat_after_capture_commits_with_the_new_mtime(tmp_path, moto_run):
    from kresume.sidecar.tasks import committed_key

    store = moto_run[3]
    path = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(path, 10, 20)
    earlier = os.stat(path).st_mtime_ns - 5 * 10**9  # the temporary file's mtime, as copystat restores it
    data = path.read_bytes()

    def copystat_once(_n: int) -> None:
        if os.stat(path).st_mtime_ns != earlier:
            os.utime(path, ns=(earlier, earlier))
            os.chmod(path, 0o644)

    with snapshot(path) as captured:
        manifest = store.commit(captured, progress=copystat_once)
    assert manifest.source["mtime_ns"] == os.stat(path).st_mtime_ns == earlier
    key = committed_key(manifest)
    assert key is not None and key[1] == earlier  # the key the sidecar's next scan lists: committed, no upload
    assert store.restore(tmp_path / "restored", manifest.id).read_bytes() == data


def test_rewrite_of_bytes_not_yet_sent_with_the_mtime_set_back_commits_what_the_file_holds(tmp_path, moto_run):
    """The rewrite lands before the upload reads that region: every byte sent is the file's byte now, so the
    commit is of one whole version (the rewritten one), never a mix."""
    store = moto_run[3]
    path = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(path, 10, 20)
    st = os.stat(path)
    done = []

    def rewrite_once(_n: int) -> None:
        if done:
            return
        with open(path, "r+b") as f:
            f.seek(st.st_size - 8192)  # the tail: not read yet when the first piece is reported
            f.write(os.urandom(4096))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        done.append(True)

    with snapshot(path) as captured:
        manifest = store.commit(captured, progress=rewrite_once)
    assert done
    assert store.restore(tmp_path / "restored", manifest.id).read_bytes() == path.read_bytes()


def test_write_after_capture_aborts_even_with_the_bytes_sent(tmp_path, moto_run):
    """An mtime moved forward is a write: never taken, whatever the bytes (the writer may not be done)."""
    store = moto_run[3]
    path = tmp_path / "epoch=0-step=10.ckpt"
    _ckpt(path, 10, 20)
    later = os.stat(path).st_mtime_ns + 5 * 10**9

    def touch_once(_n: int) -> None:
        if os.stat(path).st_mtime_ns != later:
            os.utime(path, ns=(later, later))

    with snapshot(path) as captured, pytest.raises(errors.SourceChanged):
        store.commit(captured, progress=touch_once)
    assert store.list() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another uid")  # tests run as root here
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) drops the DAC capabilities")
def test_unreadable_checkpoint_is_judged_again_when_permissions_or_owner_change(
        tmp_path, moto_run, start_sidecar, wait_committed):
    store = moto_run[3]
    watch = tmp_path / "ckpt"
    watch.mkdir()
    fixed_by_chmod, fixed_by_chown = watch / "epoch=0-step=10.ckpt", watch / "epoch=0-step=20.ckpt"
    for step, p in ((10, fixed_by_chmod), (20, fixed_by_chown)):
        _ckpt(p, step, 1)
        os.chown(p, 65534, 65534)
        os.chmod(p, 0o600)  # what safetensors' mkstemp leaves, owned by the trainer's uid
    no_dac = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    sc = start_sidecar(watch, moto_run, prefix=no_dac)
    for p in (fixed_by_chmod, fixed_by_chown):
        rec = sc.wait_log(lambda r, n=p.name: r.get("unit") == n and r.get("state") == "unreadable", 60)
        assert "0600" in rec["reason"] and "runAsUser: 65534" in rec["reason"], rec
    assert store.list() == []
    os.chmod(fixed_by_chmod, 0o644)
    wait_committed(store, {fixed_by_chmod.name}, 60)
    os.chown(fixed_by_chown, 0, 0)
    by = wait_committed(store, {fixed_by_chmod.name, fixed_by_chown.name}, 60)
    assert {n: len(ms) for n, ms in by.items()} == {fixed_by_chmod.name: 1, fixed_by_chown.name: 1}
    assert store.verify(checksums=True) == []
    assert sc.stop()[0] == 0


def test_file_stamped_in_the_future_settles_by_observation(tmp_path, moto_run, start_sidecar, wait_committed):
    """A volume whose clock runs ahead (an NFS server an hour off): a file judged by its quiet time is committed
    once the sidecar has seen it unchanged for the settle window, not an hour later."""
    store = moto_run[3]
    watch = tmp_path / "ckpt"
    watch.mkdir()
    sc = start_sidecar(watch, moto_run, "--include", "*.dat")  # unknown type: judged by the settle window (2 s)
    weights = watch / "weights-step=30.dat"
    weights.write_bytes(os.urandom(1 << 20))
    ahead = os.stat(weights).st_mtime_ns + 3600 * 10**9
    os.utime(weights, ns=(ahead, ahead))
    rec = sc.wait_log(lambda r: r.get("unit") == weights.name and "ahead_seconds" in r, 60)
    assert rec["ahead_seconds"] > 3000, rec
    by = wait_committed(store, {weights.name}, 90)
    assert [m.step for m in by[weights.name]] == [30]
    assert sc.stop()[0] == 0
