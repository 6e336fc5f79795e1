"""Retention: raw events older than ANALYTICS_RETENTION_DAYS go; rollups stay."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from tracker import partitions
from tracker.models import AccessEvent


def retention_cutoff(*, now: datetime) -> datetime:
    """Raw events before this are pruned; hours before it can no longer be re-aggregated."""
    return now - timedelta(days=settings.ANALYTICS_RETENTION_DAYS)


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    batches: int
    cutoff: datetime
    slowest_batch_seconds: float
    dropped_partitions: tuple[str, ...] = ()
    dropped_events_estimate: int = 0  # rows of the dropped days, from the planner's statistics


def prune_events(
    *,
    now: datetime,
    batch_size: int | None = None,
    pause_seconds: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> PruneResult:
    """Remove raw events older than ANALYTICS_RETENTION_DAYS. Rollups are never touched.

    On the partitioned PostgreSQL table whole days go: each day partition that ends before the
    cutoff is detached, then dropped (milliseconds, whatever its size; a day partly inside the
    retention stays until it is wholly outside). Only the rows of the default partition (events
    whose day had no partition) are deleted row by row. Elsewhere (SQLite, or before migration
    0003) all old rows are deleted.

    Deletes run in bounded batches, each its own short transaction (row locks on at most
    batch_size rows, found through the occurred_at index), so inserts and reads carry on
    meanwhile. On PostgreSQL a plain VACUUM follows, which makes the freed space reusable at
    once (no table lock, unlike VACUUM FULL). Idempotent and safe to run twice at once.
    """
    cutoff = retention_cutoff(now=now)
    batch_size = batch_size or settings.ANALYTICS_PRUNE_BATCH_SIZE
    table = AccessEvent._meta.db_table
    dropped: list[partitions.DroppedPartition] = []
    if partitions.is_partitioned():
        dropped = partitions.drop_partitions_before(cutoff=cutoff)
        table = partitions.DEFAULT_PARTITION
    deleted = batches = 0
    slowest = 0.0
    while True:
        started = time.monotonic()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN "
                f"(SELECT id FROM {table} WHERE occurred_at < %s ORDER BY occurred_at LIMIT %s)",
                [cutoff, batch_size],
            )
            count = cursor.rowcount
        slowest = max(slowest, time.monotonic() - started)
        if count <= 0:
            break
        deleted += count
        batches += 1
        if progress:
            progress(deleted, batches)
        if count < batch_size:
            break
        if pause_seconds:
            time.sleep(pause_seconds)
    if deleted and connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    return PruneResult(
        deleted=deleted,
        batches=batches,
        cutoff=cutoff,
        slowest_batch_seconds=slowest,
        dropped_partitions=tuple(partition.name for partition in dropped),
        dropped_events_estimate=sum(partition.estimated_rows for partition in dropped),
    )
