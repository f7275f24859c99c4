"""CRC-32C combine (kresume.store.crc) against google-crc32c over random splits, empty pieces included."""

from __future__ import annotations

import random

import google_crc32c
import pytest

from kresume.store import crc


def _crc(data: bytes) -> int:
    return google_crc32c.value(data) if data else 0


def test_check_value_of_the_castagnoli_crc():
    """RFC 3720 / the CRC catalogue's check value: CRC-32C("123456789") = 0xE3069283."""
    assert crc.combine(_crc(b"1234"), _crc(b"56789"), 5) == 0xE3069283 == _crc(b"123456789")


@pytest.mark.parametrize("seed", range(20))
def test_random_splits_combine_to_the_whole(seed):
    rng = random.Random(seed)
    data = rng.randbytes(rng.choice([0, 1, 7, 4096, 65_537, 300_001]))
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 12)))
    # repeated cut points make empty pieces; the ends may be empty too
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    assert b"".join(pieces) == data
    assert crc.combine_all((_crc(p), len(p)) for p in pieces) == _crc(data)


def test_empty_pieces_are_neutral():
    c = _crc(b"checkpoint bytes")
    assert crc.combine(c, 0, 0) == c
    assert crc.combine(0, c, len(b"checkpoint bytes")) == c
    assert crc.combine_all([]) == 0
    assert crc.combine_all([(0, 0), (c, 16), (0, 0)]) == c


def test_large_length_matches_extend_over_zeros():
    """Lengths far past one range (the shift is O(log n), not a loop over bytes)."""
    zeros = bytes(3 * 2**20 + 5)
    head = b"head"
    assert crc.combine(_crc(head), _crc(zeros), len(zeros)) == google_crc32c.extend(_crc(head), zeros)


def test_negative_length_is_refused():
    with pytest.raises(ValueError, match="len2"):
        crc.combine(1, 2, -1)
