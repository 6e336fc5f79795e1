"""Mergeable summaries stored with each rollup row: a latency histogram and a client-count sketch.

Latency: fixed log-spaced buckets, each 3% wider than the one before, from 0.01 ms to about
10 minutes (bucket 0 holds anything faster, the last one anything slower). A percentile is
read as the geometric middle of the bucket that holds its rank, so it is within 1.5% of the
true value (sqrt(1.03) - 1), and histograms of any set of hours merge by adding counts.
Stored sparse: little-endian (uint16 bucket, uint32 count) pairs.

Clients: a HyperLogLog with 2**12 one-byte registers (standard error 1.04/64, about 1.6%),
merged by taking each register's maximum and read with Ertl's improved estimator (2017: no
bias correction tables, no switch to linear counting, accurate from a handful of clients up).
Stored as one byte of precision (log2 of the register count) then the zlib-compressed
registers: ~1.85 KB for a busy endpoint-day, ~250 B for a hundred clients (a sparse list of
(register, rank) pairs was never shorter). Sketches of a lower precision (rows written before
2**12) merge by folding the finer ones down to it, exactly. Exact distinct counts of a single hour
are kept in HourlyStat.unique_clients; the sketch is only used to combine hours.
"""

import hashlib
import math
import zlib
from collections.abc import Iterable

import numpy as np

BUCKET_GROWTH = 1.03
BUCKET_MIN_MS = 0.01
BUCKETS = 2 + int(math.log(600_000 / BUCKET_MIN_MS) / math.log(BUCKET_GROWTH))
_LOG_GROWTH = math.log(BUCKET_GROWTH)
_PAIR = np.dtype([("bucket", "<u2"), ("count", "<u4")])

HLL_BITS = 12
HLL_REGISTERS = 1 << HLL_BITS
LEGACY_HLL_BITS = 10  # before migration 0004: 1024 raw registers without a header

# The same bucket as bucket_of(), for PostgreSQL (used when aggregating in SQL).
BUCKET_SQL = (
    f"CASE WHEN duration_ms IS NULL THEN NULL WHEN duration_ms < {BUCKET_MIN_MS} THEN 0 "
    f"ELSE least({BUCKETS - 1}, 1 + floor(ln(duration_ms / {BUCKET_MIN_MS}) / {_LOG_GROWTH!r})::int) END"
)


def bucket_of(duration_ms: float) -> int:
    if duration_ms < BUCKET_MIN_MS:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log(duration_ms / BUCKET_MIN_MS) / _LOG_GROWTH))


def bucket_value(bucket: int) -> float:
    """The value that stands for a bucket: its geometric middle (0 for the first)."""
    if bucket == 0:
        return 0.0
    return BUCKET_MIN_MS * BUCKET_GROWTH ** (bucket - 1) * math.sqrt(BUCKET_GROWTH)


def encode_histogram(counts: dict[int, int]) -> bytes:
    pairs = np.array(sorted((b, c) for b, c in counts.items() if c), dtype=_PAIR)
    return pairs.tobytes()


def merge_histograms(blobs: Iterable[bytes | memoryview | None]) -> np.ndarray:
    """Dense counts per bucket of all the given encoded histograms added up."""
    data = b"".join(bytes(blob) for blob in blobs if blob)
    if not data:
        return np.zeros(BUCKETS, dtype=np.int64)
    pairs = np.frombuffer(data, dtype=_PAIR)
    return np.bincount(pairs["bucket"], weights=pairs["count"], minlength=BUCKETS).astype(np.int64)


def dense_to_blob(dense: np.ndarray) -> bytes:
    nonzero = np.nonzero(dense)[0]
    pairs = np.empty(len(nonzero), dtype=_PAIR)
    pairs["bucket"] = nonzero
    pairs["count"] = dense[nonzero]
    return pairs.tobytes()


def percentile(dense: np.ndarray, fraction: float) -> float | None:
    """The value at the given fraction (0..1) of a dense histogram, None if it is empty."""
    total = int(dense.sum())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    bucket = int(np.searchsorted(np.cumsum(dense), rank))
    return bucket_value(bucket)


# PostgreSQL computes the same registers in SQL from its own 64-bit hash of the address
# (hashtextextended); one database always uses one of the two hashes, so sketches merge.
HLL_HASH_SQL = "hashtextextended(host(client_ip), 0)"
_REST_BITS = 64 - HLL_BITS
HLL_REGISTER_SQL = f"((h >> {_REST_BITS}) & {HLL_REGISTERS - 1})"
_REST_SQL = f"(h & {(1 << _REST_BITS) - 1})"
# floor(log2(rest)) from a float8 logarithm can be one off next to a power of two (2**52 - 1 gave
# 52): it is corrected by comparing rest with the powers of two around it.
_LOG2_SQL = f"floor(ln({_REST_SQL}::float8) / ln(2))::int"
HLL_RANK_SQL = (
    f"CASE WHEN {_REST_SQL} = 0 THEN {_REST_BITS + 1} "
    f"ELSE {_REST_BITS} - ({_LOG2_SQL} + ({_REST_SQL} >= (1::int8 << ({_LOG2_SQL} + 1)))::int"
    f" - ({_REST_SQL} < (1::int8 << {_LOG2_SQL}))::int) END"
)


def client_hash(address: str) -> int:
    return int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(), "big")


def register_and_rank(h: int, bits: int = HLL_BITS) -> tuple[int, int]:
    """Where a 64-bit hash (unsigned) lands in a sketch of 2**bits registers, and its rank there
    (leading zeros of the remaining bits, plus one); HLL_REGISTER_SQL and HLL_RANK_SQL agree."""
    rest_bits = 64 - bits
    rest = h & ((1 << rest_bits) - 1)
    return h >> rest_bits, rest_bits - rest.bit_length() + 1


def sketch_clients(addresses: Iterable[str | None]) -> bytes:
    """The encoded HyperLogLog of a set of client addresses."""
    registers = np.zeros(HLL_REGISTERS, dtype=np.uint8)
    for address in addresses:
        if not address:
            continue
        index, rank = register_and_rank(client_hash(address))
        if rank > registers[index]:
            registers[index] = rank
    return encode_sketch(registers)


def empty_sketch() -> np.ndarray:
    return np.zeros(HLL_REGISTERS, dtype=np.uint8)


def encode_sketch(registers: np.ndarray) -> bytes:
    """One byte of precision, then the zlib-compressed registers; b"" when no client was seen."""
    registers = np.asarray(registers, dtype=np.uint8)
    if not registers.any():
        return b""
    return bytes([_precision(registers)]) + zlib.compress(registers.tobytes(), 6)


def decode_sketch(blob: bytes | memoryview | None) -> np.ndarray | None:
    """The registers of an encoded sketch (None for an empty one)."""
    if not blob:
        return None
    data = bytes(blob)
    registers = np.frombuffer(zlib.decompress(data[1:]), dtype=np.uint8)
    if len(registers) != 1 << data[0]:
        raise ValueError(f"a client sketch of precision {data[0]} holds {len(registers)} registers")
    return registers


def precision_of(blob: bytes | memoryview | None) -> int | None:
    """The precision (log2 of the register count) of an encoded sketch; None for an empty one."""
    return bytes(blob[:1])[0] if blob else None


def _precision(registers: np.ndarray) -> int:
    bits = len(registers).bit_length() - 1
    if len(registers) != 1 << bits:
        raise ValueError(f"{len(registers)} registers: not a power of two")
    return bits


def fold(registers: np.ndarray, bits: int) -> np.ndarray:
    """The same sketch at a lower precision (exact: what hashing into 2**bits registers gives).

    Register i of the finer sketch lands in i >> d (d = the difference); the d bits dropped
    from the index become the top of the rank's bits: a non-zero s gives rank d - bitlen(s) + 1,
    s = 0 adds d to the rank."""
    have = _precision(registers)
    if bits >= have:
        return registers
    d = have - bits
    grid = registers.reshape(1 << bits, 1 << d).astype(np.uint8)
    low = np.arange(1 << d)
    lead = (d - np.floor(np.log2(np.maximum(low, 1))).astype(np.int64)).astype(np.uint8)  # d - bitlen(s) + 1
    ranks = np.where(low == 0, grid + np.uint8(d), lead[np.newaxis, :])
    return np.where(grid > 0, ranks, 0).max(axis=1).astype(np.uint8)


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sketch of the union of two sets (at the lower precision of the two)."""
    if len(a) != len(b):
        bits = min(_precision(a), _precision(b))
        a, b = fold(a, bits), fold(b, bits)
    return np.maximum(a, b)


def merge_sketches(blobs: Iterable[bytes | memoryview | None]) -> np.ndarray:
    """The registers of the union of encoded sketches (empty registers if there are none)."""
    decoded = [registers for registers in map(decode_sketch, blobs) if registers is not None]
    if not decoded:
        return empty_sketch()
    if all(len(registers) == len(decoded[0]) for registers in decoded):
        return np.maximum.reduce(decoded) if len(decoded) > 1 else decoded[0].copy()
    merged = decoded[0]
    for registers in decoded[1:]:
        merged = union(merged, registers)
    return merged


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


def estimate_clients(registers: np.ndarray) -> int:
    """Ertl's improved HyperLogLog estimate (arXiv:1702.01284, algorithm 6) of a sketch's set size."""
    m = len(registers)
    q = 64 - _precision(registers)
    counts = np.bincount(np.asarray(registers, dtype=np.int64), minlength=q + 2)
    if counts[0] == m:
        return 0
    z = m * _tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _sigma(counts[0] / m)
    return round(m * m / (2 * math.log(2)) / z)
