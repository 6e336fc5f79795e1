"""Summary: what is known about one endpoint over some time, and how summaries merge.

Pure data (no database, no cache): raw-event reads and rollup rows both turn into Summaries,
and merging them is how every query stitches rollups and raw events together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import numpy as np

from analytics import sketches

TOP_CLIENTS = 20  # busiest client addresses kept per endpoint and hour (the admin console's top clients)

# The rollup columns merge_rollup_rows reads, in its order (HourlyStat and DailyStat share them).
ROLLUP_MERGE_COLUMNS = (
    "endpoint",
    "access_count",
    "error_count",
    "total_response_time_ms",
    "timed_count",
    "last_accessed_at",
    "latency_histogram",
    "client_sketch",
)


@dataclass
class Summary:
    """What is known about one endpoint over some time: mergeable, so rollups and raw combine."""

    access_count: int = 0
    error_count: int = 0
    total_response_time_ms: float = 0.0
    timed_count: int = 0
    last_accessed_at: datetime | None = None
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(sketches.BUCKETS, dtype=np.int64))
    sketch: np.ndarray = field(default_factory=sketches.empty_sketch)
    unique_clients: int | None = None  # exact when known (one hour, or raw), else estimated from sketch
    countries: dict[str, int] = field(default_factory=dict)
    # Raw-event summaries only (HourlyStat keeps them; merges of rollups do not carry them).
    client_error_count: int = 0  # 4xx, 429 included
    throttled_count: int = 0  # 429: rate-limit refusals
    top_clients: dict[str, int] = field(default_factory=dict)  # the TOP_CLIENTS busiest addresses

    def add_counts(
        self, *, access: int, errors: int, total_ms: float | None, timed: int, last: datetime | None
    ) -> None:
        self.access_count += access
        self.error_count += errors
        self.total_response_time_ms += total_ms or 0.0
        self.timed_count += timed
        if last is not None and (self.last_accessed_at is None or last > self.last_accessed_at):
            self.last_accessed_at = last

    @property
    def avg_response_time_ms(self) -> float | None:
        return self.total_response_time_ms / self.timed_count if self.timed_count else None

    @property
    def p95_response_time_ms(self) -> float | None:
        return sketches.percentile(self.histogram, 0.95)

    def estimated_clients(self) -> int:
        return self.unique_clients if self.unique_clients is not None else sketches.estimate_clients(self.sketch)

    def rollup_columns(self) -> dict[str, Any]:
        """The columns HourlyStat and DailyStat share (ROLLUP_MERGE_COLUMNS but endpoint), as stored."""
        return {
            "access_count": self.access_count,
            "error_count": self.error_count,
            "total_response_time_ms": self.total_response_time_ms,
            "timed_count": self.timed_count,
            "last_accessed_at": self.last_accessed_at,
            "latency_histogram": sketches.dense_to_blob(self.histogram),
            "client_sketch": sketches.encode_sketch(self.sketch),
        }


def merge_rollup_rows(rows: Iterable[Sequence[Any]]) -> dict[str, Summary]:
    """Summaries per endpoint from rollup tuples in ROLLUP_MERGE_COLUMNS order."""
    grouped: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    # Every endpoint's sketches decoded in one pass.
    merged = sketches.merge_sketch_groups([[row[7] for row in group] for group in grouped.values()])
    summaries = {}
    for (name, group), sketch in zip(grouped.items(), merged, strict=True):
        summary = Summary()
        for _, access, errors, total_ms, timed, last, _, _ in group:
            summary.add_counts(access=access, errors=errors, total_ms=total_ms, timed=timed, last=last)
        summary.histogram = sketches.merge_histograms(row[6] for row in group)
        summary.sketch = sketch
        summaries[name] = summary
    return summaries


def merge_summaries(target: dict[str, Summary], extra: dict[str, Summary]) -> None:
    """Add `extra` into `target` (per endpoint, in place); unique clients of merged endpoints then
    come from the sketches. Countries are left as they are (callers that keep them add them)."""
    for name, part in extra.items():
        summary = target.get(name)
        if summary is None:
            target[name] = part
            continue
        summary.add_counts(
            access=part.access_count,
            errors=part.error_count,
            total_ms=part.total_response_time_ms,
            timed=part.timed_count,
            last=part.last_accessed_at,
        )
        summary.histogram = summary.histogram + part.histogram
        summary.sketch = sketches.union(summary.sketch, part.sketch)
        summary.unique_clients = None  # two parts: only the sketch can combine them
        summary.client_error_count += part.client_error_count
        summary.throttled_count += part.throttled_count
        clients = dict(summary.top_clients)
        for address, count in part.top_clients.items():
            clients[address] = clients.get(address, 0) + count
        summary.top_clients = dict(sorted(clients.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CLIENTS])


# Summary's fields other than its two arrays (pack_summaries stores those encoded).
_SCALAR_FIELDS = tuple(f.name for f in fields(Summary) if f.name not in {"histogram", "sketch"})


def pack_summaries(summaries: dict[str, Summary]) -> list[tuple[str, dict[str, Any], bytes, bytes]]:
    """Summaries as the rollup cache stores them: sketches packed (one numpy pass) and histograms sparse.

    About 450 KB for 50 endpoints at 2**14 registers, where the raw arrays pickled to 1.07 MB (a Redis
    SET of those took ~8 ms, of the packed ones under 1 ms). unpack_summaries reverses it exactly."""
    names = list(summaries)
    by_precision: dict[int, list[int]] = {}
    for index, name in enumerate(names):
        by_precision.setdefault(len(summaries[name].sketch), []).append(index)
    sketch_blobs: list[bytes] = [b""] * len(names)
    for indexes in by_precision.values():
        rows = np.stack([summaries[names[index]].sketch for index in indexes])
        for index, blob in zip(indexes, sketches.encode_packed(rows), strict=True):
            sketch_blobs[index] = blob
    return [
        (
            name,
            {column: getattr(summaries[name], column) for column in _SCALAR_FIELDS},
            sketch_blobs[index],
            sketches.dense_to_blob(summaries[name].histogram),
        )
        for index, name in enumerate(names)
    ]


def unpack_summaries(packed: list[tuple[str, dict[str, Any], bytes, bytes]]) -> dict[str, Summary]:
    """The summaries pack_summaries was given."""
    merged = sketches.merge_sketch_groups([[blob] for _, _, blob, _ in packed])
    return {
        name: Summary(**columns, histogram=sketches.merge_histograms([histogram]), sketch=sketch)
        for (name, columns, _, histogram), sketch in zip(packed, merged, strict=True)
    }
