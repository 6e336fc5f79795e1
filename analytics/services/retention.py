"""Retention: raw events older than ANALYTICS_RETENTION_DAYS go; rollups stay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings

from analytics import rollup_ranges
from analytics.models import RangeStat
from tracker import services as tracker_services


def retention_cutoff(*, now: datetime) -> datetime:
    """Raw events before this are pruned; hours before it can no longer be re-aggregated."""
    return now - timedelta(days=settings.ANALYTICS_RETENTION_DAYS)


# What a prune did: the cutoff, rows deleted in batches, day partitions dropped (tracker's result).
PruneResult = tracker_services.DeleteResult


def prune_events(
    *,
    now: datetime,
    batch_size: int | None = None,
    pause_seconds: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> PruneResult:
    """Remove raw events older than ANALYTICS_RETENTION_DAYS. Rollups are never touched (only the
    pre-merged runs of them, RangeStat, older than any period reaches).

    The event table is tracker's: this decides the cutoff and leaves the removal to
    tracker.services.delete_events_before (whole day partitions dropped, the rest deleted in
    bounded batches; see there). Idempotent and safe to run twice at once.
    """
    # Pre-merged runs no period reaches any more (they are a read path, not a record).
    RangeStat.objects.filter(end__lt=rollup_ranges.midnight(now) - rollup_ranges.KEEP).delete()
    return tracker_services.delete_events_before(
        cutoff=retention_cutoff(now=now),
        batch_size=batch_size or settings.ANALYTICS_PRUNE_BATCH_SIZE,
        pause_seconds=pause_seconds,
        progress=progress,
    )
