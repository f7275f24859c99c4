"""CRC-32C of a whole from the CRC-32Cs of its pieces (pure; no I/O).

Concurrent range downloads compute one CRC-32C per range as its bytes arrive; the object's
CRC-32C is then the ranges' values combined in order. The method is zlib's ``crc32_combine``
(zlib 1.2.12+ ``crc32.c``: ``multmodp``/``x2nmodp``), which works for any reflected CRC whose
register starts at and is finally XORed with all ones. CRC-32C (Castagnoli, RFC 3720 §12.1,
the checksum google-crc32c computes) is such a CRC, with the reflected polynomial
:data:`POLY` instead of CRC-32's 0xEDB88320.

Values are unsigned 32-bit ints, the form ``google_crc32c.value``/``extend`` return.
"""

from __future__ import annotations

from collections.abc import Iterable

POLY = 0x82F63B78
"""CRC-32C (Castagnoli) polynomial 0x1EDC6F41, bit-reflected, x^32 implied."""


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the polynomial, both as reflected 32-bit polynomials over GF(2)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    """``x^(2^k)`` modulo the polynomial for k in 0..31 (zlib's ``x2n_table``)."""
    p = 1 << 30  # x^1
    table = [p]
    for _ in range(1, 32):
        p = _multmodp(p, p)
        table.append(p)
    return tuple(table)


_X2N = _x2n_table()


def _x2nmodp(n: int, k: int) -> int:
    """``x^(n * 2^k)`` modulo the polynomial."""
    p = 1 << 31  # x^0
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32C of ``A + B`` from ``crc1`` = CRC-32C(A), ``crc2`` = CRC-32C(B) and ``len2`` = len(B).

    ``len(A)`` is not needed. An empty piece has CRC 0 (``combine(c, 0, 0) == c``,
    ``combine(0, c, n) == c``). About 40 µs in CPython; O(log len2).

    Raises
    ------
    ValueError
        ``len2`` is negative.
    """
    if len2 < 0:
        raise ValueError(f"len2 must be >= 0, got {len2}")
    # x^(8 * len2) = x^(len2 * 2^3): shift crc1 past len2 bytes of zeros, then add crc2.
    return _multmodp(_x2nmodp(len2, 3), crc1 & 0xFFFFFFFF) ^ (crc2 & 0xFFFFFFFF)


def combine_all(pieces: Iterable[tuple[int, int]]) -> int:
    """CRC-32C of the concatenation of pieces given in order as ``(crc, length)`` pairs (0 if none)."""
    crc = 0
    for piece_crc, length in pieces:
        crc = combine(crc, piece_crc, length)
    return crc
