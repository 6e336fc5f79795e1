"""Mergeable summaries stored with each rollup row: a latency histogram and a client-count sketch.

Latency: fixed log-spaced buckets, each 3% wider than the one before, from 0.01 ms to about
10 minutes (bucket 0 holds anything faster, the last one anything slower). A percentile is
read as the geometric middle of the bucket that holds its rank, so it is within 1.5% of the
true value (sqrt(1.03) - 1), and histograms of any set of hours merge by adding counts.
Stored sparse: little-endian (uint16 bucket, uint32 count) pairs.

Clients: a HyperLogLog with 2**10 one-byte registers (standard error about 3.3%), merged
by taking each register's maximum. Exact distinct counts of a single hour are kept in
HourlyStat.unique_clients; the sketch is only used to combine hours.
"""

import hashlib
import math

import numpy as np

BUCKET_GROWTH = 1.03
BUCKET_MIN_MS = 0.01
BUCKETS = 2 + int(math.log(600_000 / BUCKET_MIN_MS) / math.log(BUCKET_GROWTH))
_LOG_GROWTH = math.log(BUCKET_GROWTH)
_PAIR = np.dtype([("bucket", "<u2"), ("count", "<u4")])

HLL_BITS = 10
HLL_REGISTERS = 1 << HLL_BITS
_HLL_ALPHA = 0.7213 / (1 + 1.079 / HLL_REGISTERS)

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


def merge_histograms(blobs) -> np.ndarray:
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
HLL_RANK_SQL = (
    f"CASE WHEN h & {(1 << _REST_BITS) - 1} = 0 THEN {_REST_BITS + 1} "
    f"ELSE {_REST_BITS} - floor(ln((h & {(1 << _REST_BITS) - 1})::float8) / ln(2))::int END"
)


def client_hash(address: str) -> int:
    return int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(), "big")


def sketch_clients(addresses) -> bytes:
    """HyperLogLog registers of a set of client addresses."""
    registers = bytearray(HLL_REGISTERS)
    rest_bits = 64 - HLL_BITS
    for address in addresses:
        if not address:
            continue
        h = client_hash(address)
        index = h >> rest_bits
        rest = h & ((1 << rest_bits) - 1)
        rank = rest_bits - rest.bit_length() + 1
        if rank > registers[index]:
            registers[index] = rank
    return bytes(registers)


def merge_sketches(blobs) -> np.ndarray:
    arrays = [np.frombuffer(bytes(b), dtype=np.uint8) for b in blobs if b]
    if not arrays:
        return np.zeros(HLL_REGISTERS, dtype=np.uint8)
    return np.maximum.reduce(arrays) if len(arrays) > 1 else arrays[0]


def estimate_clients(registers: np.ndarray) -> int:
    """HyperLogLog estimate, with linear counting for small sets (where it is near exact)."""
    if not registers.any():
        return 0
    m = HLL_REGISTERS
    raw = _HLL_ALPHA * m * m / float(np.sum(np.power(2.0, -registers.astype(np.float64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * m and zeros:
        return round(m * math.log(m / zeros))
    return round(raw)
