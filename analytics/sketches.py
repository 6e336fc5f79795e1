"""Mergeable summaries stored with each rollup row: a latency histogram and a client-count sketch.

Latency: fixed log-spaced buckets, each 3% wider than the one before, from 0.01 ms to about
10 minutes (bucket 0 holds anything faster, the last one anything slower). A percentile is
read as the geometric middle of the bucket that holds its rank, so it is within 1.5% of the
true value (sqrt(1.03) - 1), and histograms of any set of hours merge by adding counts.
Stored sparse: little-endian (uint16 bucket, uint32 count) pairs.

Clients: a HyperLogLog with 2**14 one-byte registers (Redis's size; standard error 1.04/128, about
0.81%, so 3% is 3.7 standard errors), merged by taking each register's maximum and read with Ertl's
improved estimator (2017: no bias correction tables, no switch to linear counting, accurate from a
handful of clients up). Encoded for cheap reads, never compressed (inflating ~300 sketches of 16 KB
cost more than fetching them; docs/PERFORMANCE.md):
- b"": no client seen;
- PACKED | precision, a base byte, 4-bit registers minus the base (two per byte, even register in
  the low nibble), then (uint16 register, uint8 value) for each register more than 15 above the base
  (its nibble is 0): 8 KB plus a few bytes for any busy sketch, unpacked by numpy in one pass;
- SPARSE | precision, then the non-zero registers as uint16 indexes followed by uint8 values, when
  that is shorter (up to ~2,700 non-zero registers, i.e. an endpoint-hour of a few thousand clients);
- precision alone (no flag), then the zlib-compressed registers: the format before 2**14 (2**12 and,
  from migration 0004, 2**10), still read.
Sketches of a lower precision (rows written before 2**14) merge by folding the finer ones down to it,
exactly. Exact distinct counts of a single hour are kept in HourlyStat.unique_clients; the sketch is
only used to combine hours.
"""

import hashlib
import math
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

BUCKET_GROWTH = 1.03
BUCKET_MIN_MS = 0.01
BUCKETS = 2 + int(math.log(600_000 / BUCKET_MIN_MS) / math.log(BUCKET_GROWTH))
_LOG_GROWTH = math.log(BUCKET_GROWTH)
_PAIR = np.dtype([("bucket", "<u2"), ("count", "<u4")])

HLL_BITS = 14
HLL_REGISTERS = 1 << HLL_BITS
LEGACY_HLL_BITS = 10  # before migration 0004: 1024 raw registers without a header
# The flags on an encoded sketch's first byte (the low six bits are its precision); neither: zlib.
PACKED, SPARSE = 0x40, 0x80
_PRECISION_MASK = 0x3F
_NIBBLE_MAX = 15
_EXCEPTION = np.dtype([("register", "<u2"), ("value", "u1")])

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
    """The registers encoded (see the module docstring): sparse when that is shorter, else packed;
    b"" when no client was seen."""
    registers = np.asarray(registers, dtype=np.uint8)
    bits = _precision(registers)
    nonzero = np.flatnonzero(registers)
    if len(nonzero) == 0:
        return b""
    if 3 * len(nonzero) < len(registers) // 2:
        return bytes([SPARSE | bits]) + nonzero.astype("<u2").tobytes() + registers[nonzero].tobytes()
    base = int(registers.min())
    offsets = registers - np.uint8(base)
    high = np.flatnonzero(offsets > _NIBBLE_MAX)
    offsets[high] = 0
    exceptions = np.empty(len(high), dtype=_EXCEPTION)
    exceptions["register"], exceptions["value"] = high, registers[high]
    nibbles = offsets[0::2] | (offsets[1::2] << 4)
    return bytes([PACKED | bits, base]) + nibbles.tobytes() + exceptions.tobytes()


def encode_packed(rows: np.ndarray) -> list[bytes]:
    """The packed encoding of each row of a 2-D array of sketches (one precision, at least one row), in
    one numpy pass (the rollup cache stores every endpoint's merge this way: half the bytes of raw
    registers)."""
    rows = np.asarray(rows, dtype=np.uint8)
    head = PACKED | _precision(rows[0])
    bases = rows.min(axis=1)
    offsets = rows - bases[:, np.newaxis]
    high = np.flatnonzero(offsets > _NIBBLE_MAX)  # flat: np.nonzero of a 2-D mask was ~50x slower
    offsets.reshape(-1)[high] = 0
    nibbles = offsets[:, 0::2] | (offsets[:, 1::2] << 4)
    high_rows, high_registers = np.divmod(high, rows.shape[1])  # ordered by row
    bounds = np.searchsorted(high_rows, np.arange(len(rows) + 1))
    blobs = []
    for row, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        exceptions = np.empty(hi - lo, dtype=_EXCEPTION)
        exceptions["register"], exceptions["value"] = high_registers[lo:hi], rows[row, high_registers[lo:hi]]
        blobs.append(bytes([head, int(bases[row])]) + nibbles[row].tobytes() + exceptions.tobytes())
    return blobs


def decode_sketch(blob: bytes | memoryview | None) -> np.ndarray | None:
    """The registers of an encoded sketch (None for an empty one); may be read-only."""
    if not blob:
        return None
    data = bytes(blob)
    head = data[0]
    size = 1 << (head & _PRECISION_MASK)
    if head & PACKED:
        return _unpack(np.frombuffer(data, np.uint8, size // 2, 2)[np.newaxis, :], [data[1]], [data])[0]
    if head & SPARSE:
        count = (len(data) - 1) // 3
        registers = np.zeros(size, dtype=np.uint8)
        registers[np.frombuffer(data, "<u2", count, 1)] = np.frombuffer(data, np.uint8, count, 1 + 2 * count)
        return registers
    registers = np.frombuffer(zlib.decompress(data[1:]), dtype=np.uint8)
    if len(registers) != size:
        raise ValueError(f"a client sketch of precision {head} holds {len(registers)} registers")
    return registers


def _unpack(nibbles: np.ndarray, bases: Sequence[int], blobs: Sequence[bytes]) -> np.ndarray:
    """Registers of packed sketches, one row each, from their nibbles (one row each), bases and blobs
    (for the registers more than 15 above the base, stored after the nibbles)."""
    rows, half = nibbles.shape
    registers = np.stack((nibbles & _NIBBLE_MAX, nibbles >> 4), axis=-1).reshape(rows, 2 * half)
    registers += np.asarray(bases, dtype=np.uint8)[:, np.newaxis]
    for row, blob in enumerate(blobs):
        if len(blob) > 2 + half:
            exceptions = np.frombuffer(blob, _EXCEPTION, offset=2 + half)
            registers[row, exceptions["register"]] = exceptions["value"]
    return registers


def precision_of(blob: bytes | memoryview | None) -> int | None:
    """The precision (log2 of the register count) of an encoded sketch; None for an empty one."""
    return bytes(blob[:1])[0] & _PRECISION_MASK if blob else None


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


def merge_sketch_groups(groups: Sequence[Sequence[bytes | memoryview | None]]) -> list[np.ndarray]:
    """merge_sketches of each group, decoded together: the packed sketches of every group in one numpy
    pass (a read of all endpoints' rollups decodes ~250 sketches; one at a time, numpy's per-call
    overhead was most of the cost). A group holding a sketch of an older precision is merged on its
    own, folded to it."""
    merged = np.zeros((len(groups), HLL_REGISTERS), dtype=np.uint8)
    half = HLL_REGISTERS // 2
    packed: list[bytes] = []
    packed_groups: list[int] = []
    sparse: list[tuple[int, bytes]] = []
    older: dict[int, list[bytes]] = {}
    for group, blobs in enumerate(groups):
        present = [bytes(blob) for blob in blobs if blob]
        if any(blob[0] & _PRECISION_MASK != HLL_BITS for blob in present):
            older[group] = present
            continue
        for blob in present:
            if blob[0] & PACKED:
                packed.append(blob)
                packed_groups.append(group)
            elif blob[0] & SPARSE:
                sparse.append((group, blob))
            else:  # zlib at this precision: never written, but readable
                registers = decode_sketch(blob)
                assert registers is not None  # blob is not empty
                np.maximum(merged[group], registers, out=merged[group])
    if packed:
        # Merged in two planes, even and odd registers (the low and high nibbles), interleaved once at
        # the end: unpacking every sketch into whole registers first took three times as long.
        nibbles = np.frombuffer(b"".join(memoryview(blob)[2 : 2 + half] for blob in packed), np.uint8)
        nibbles = nibbles.reshape(len(packed), half)
        bases = np.asarray([blob[1] for blob in packed], dtype=np.uint8)[:, np.newaxis]
        planes = nibbles & _NIBBLE_MAX, nibbles >> 4
        for plane in planes:
            plane += bases
        # The registers more than 15 above their base (most busy sketches have one or two), all at once.
        tails = [(row, memoryview(blob)[2 + half :]) for row, blob in enumerate(packed) if len(blob) > 2 + half]
        if tails:
            exceptions = np.frombuffer(b"".join(tail for _, tail in tails), _EXCEPTION)
            rows = np.repeat([row for row, _ in tails], [len(tail) // _EXCEPTION.itemsize for _, tail in tails])
            for parity, plane in enumerate(planes):
                chosen = exceptions["register"] % 2 == parity
                plane[rows[chosen], exceptions["register"][chosen] // 2] = exceptions["value"][chosen]
        order = np.asarray(packed_groups)  # ascending: groups were visited in order
        bounds = np.flatnonzero(np.r_[True, order[1:] != order[:-1], True])
        targets = order[bounds[:-1]]
        for plane, parity in zip(planes, (0, 1), strict=True):
            if len(targets) == len(packed):  # one sketch per group (the rollup cache's entries)
                reduced = plane
            else:
                spans = zip(bounds[:-1], bounds[1:], strict=True)
                reduced = np.stack([plane[lo:hi].max(axis=0) for lo, hi in spans])
            merged[targets, parity::2] = np.maximum(merged[targets, parity::2], reduced)
    # After the packed ones (assigned above). One sketch at a time: its registers are distinct, so a
    # gather and a scatter do; np.maximum.at over all of them took ~8 ms for 60 sketches.
    for group, blob in sparse:
        count = (len(blob) - 1) // 3
        at = np.frombuffer(blob, "<u2", count, 1)
        row = merged[group]
        row[at] = np.maximum(row[at], np.frombuffer(blob, np.uint8, count, 1 + 2 * count))
    result = list(merged)
    for group, blobs in older.items():
        result[group] = merge_sketches(blobs)
    return result


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
    counts = np.bincount(registers, minlength=q + 2).tolist()  # Python ints: the loop below is scalar
    if counts[0] == m:
        return 0
    z = m * _tau(1.0 - counts[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + counts[k])
    z += m * _sigma(counts[0] / m)
    return round(m * m / (2 * math.log(2)) / z)
