"""Restore on every backend with small ranges: range boundaries, empty files, and objects that are
not what the manifest says (same size but corrupt, shorter, longer) — always CorruptCheckpoint,
naming the object's URL, and nothing under DEST/<name>.

Ranges of 256 KiB make a few MiB cover several ranges (S3: concurrent ranged GETs; other backends:
sequential reads of that size).
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from kresume.store import download, errors, layout, transfer
from kresume.store.runstore import RunStore
from kresume.store.storage import TransferSettings

from _fixtures.common import file_crc32c

RANGE = 256 * 1024
SETTINGS = TransferSettings(range_size=RANGE, part_size=RANGE, ranges_in_flight=3, attempts=3, backoff_base=0.01)
"""Restore settings: S3 ranges and other backends' sequential pieces of 256 KiB (commits keep the
defaults: S3 multipart parts must be >= 5 MiB)."""


class _Run(RunStore):
    """Commits with the default settings, restores with :data:`SETTINGS`."""

    def restore(self, *args, **kwargs):
        return RunStore(self.fs, self.root, self.url, SETTINGS).restore(*args, **kwargs)


@pytest.fixture
def run(store_base):
    return _Run.open(store_base.join("ns", f"run-{uuid.uuid4().hex[:8]}"), store_base.options)


def _write(path: Path, size: int, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = hashlib.shake_256(str(seed).encode()).digest(size) if size else b""
    path.write_bytes(data)
    return data


def _key(run: RunStore, m, relpath: str | None = None) -> str:
    return run._path(layout.data_key(m.id, m.name, relpath))


@pytest.mark.parametrize("size", [4 * RANGE, 4 * RANGE + 1234, RANGE - 1, 1])
def test_file_of_whole_and_partial_ranges_round_trips(run, tmp_path, size):
    data = _write(tmp_path / "src" / f"weights-{size}.dat", size, seed=size)
    m = run.commit(tmp_path / "src" / f"weights-{size}.dat")
    seen = []
    restored = run.restore(tmp_path / "dest", progress=seen.append)
    assert restored.read_bytes() == data
    assert sum(seen) == size  # progress adds up to the payload exactly
    assert not any(p.name.startswith(".kresume") for p in (tmp_path / "dest").iterdir())
    assert m.files[0].size == size


def test_folder_with_empty_file_and_mixed_sizes(run, tmp_path):
    folder = tmp_path / "src" / "step_3"
    sizes = {"empty.dat": 0, "exact.dat": 2 * RANGE, "odd.dat": 3 * RANGE + 7, "tiny/one.dat": 1}
    want = {name: _write(folder / name, size, seed=i) for i, (name, size) in enumerate(sizes.items())}
    run.commit(folder)
    restored = run.restore(tmp_path / "dest")
    for name, data in want.items():
        assert (restored / name).read_bytes() == data, name


def test_download_file_returns_the_crc_of_what_it_wrote(run, tmp_path):
    """The CRC is computed as bytes arrive (no re-read) and must equal the local file's."""
    data = _write(tmp_path / "src" / "x.dat", 5 * RANGE + 99, seed=7)
    m = run.commit(tmp_path / "src" / "x.dat")
    out = tmp_path / "out.dat"
    got = download.download_file(run.fs, _key(run, m), str(out), len(data), SETTINGS, url="u")
    assert got == m.files[0].crc32c == file_crc32c(str(out))
    assert out.read_bytes() == data


def test_corrupted_byte_in_a_middle_range_is_caught(run, tmp_path):
    data = _write(tmp_path / "src" / "x.dat", 5 * RANGE + 10, seed=3)
    m = run.commit(tmp_path / "src" / "x.dat")
    bad = bytearray(data)
    bad[2 * RANGE + 17] ^= 0x01
    transfer.write_small(run.fs, _key(run, m), bytes(bad))
    with pytest.raises(errors.CorruptCheckpoint, match="crc32c") as info:
        run.restore(tmp_path / "dest", m.id)
    assert run.key_url(layout.data_key(m.id, m.name, None)) in str(info.value)
    assert not (tmp_path / "dest" / m.name).exists()
    assert list((tmp_path / "dest").iterdir()) == []  # staging removed


@pytest.mark.parametrize("new_size", [2 * RANGE + RANGE // 2, 3 * RANGE, 0, 4 * RANGE + 1])
def test_shorter_or_longer_object_is_caught(run, tmp_path, new_size):
    """Truncated (inside a range, on a range boundary, to nothing) or grown: never restored."""
    data = _write(tmp_path / "src" / "x.dat", 4 * RANGE, seed=4)
    m = run.commit(tmp_path / "src" / "x.dat")
    changed = (data + b"z" * RANGE)[:new_size]
    transfer.write_small(run.fs, _key(run, m), changed)
    with pytest.raises(errors.CorruptCheckpoint) as info:
        run.restore(tmp_path / "dest", m.id)
    assert run.key_url(layout.data_key(m.id, m.name, None)) in str(info.value)
    assert str(4 * RANGE) in str(info.value)  # names the manifest's size
    assert not (tmp_path / "dest" / m.name).exists()


def test_empty_file_whose_object_has_bytes_is_caught(run, tmp_path):
    folder = tmp_path / "src" / "step_1"
    _write(folder / "a.dat", 0, seed=0)
    _write(folder / "b.dat", 10, seed=1)
    m = run.commit(folder)
    transfer.write_small(run.fs, _key(run, m, "a.dat"), b"not empty")
    with pytest.raises(errors.CorruptCheckpoint, match="manifest says 0 B"):
        run.restore(tmp_path / "dest", m.id)


def test_missing_object_is_a_corrupt_checkpoint_naming_it(run, tmp_path):
    folder = tmp_path / "src" / "step_2"
    for i in range(3):
        _write(folder / f"shard{i}.dat", RANGE + i, seed=i)
    m = run.commit(folder)
    run.fs.rm(_key(run, m, "shard1.dat"))
    with pytest.raises(errors.CorruptCheckpoint, match="missing") as info:
        run.restore(tmp_path / "dest", m.id)
    assert run.key_url(layout.data_key(m.id, m.name, "shard1.dat")) in str(info.value)
    assert list((tmp_path / "dest").iterdir()) == []
