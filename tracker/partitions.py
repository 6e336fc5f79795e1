"""Day partitions of AccessEvent on PostgreSQL (see migration 0003): create ahead, drop old days.

The table is partitioned by range of occurred_at, one partition per UTC day
(tracker_accessevent_pYYYYMMDD), plus a DEFAULT partition that takes any event whose day has
no partition yet, so no event is ever refused. The beat task creates the coming days ahead
and moves rows of a day out of the default partition when it creates that day. Retention
(analytics.services.retention.prune_events, through tracker.services.delete_events_before) detaches
and drops whole days instead of deleting rows.

On SQLite (the embedded default) the table is plain: every function here does nothing.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction

from tracker.models import AccessEvent

logger = logging.getLogger(__name__)
TABLE = AccessEvent._meta.db_table
DEFAULT_PARTITION = f"{TABLE}_default"
_DAY_NAME = re.compile(rf"{TABLE}_p(\d{{8}})")
DAY = timedelta(days=1)
# Detaching takes a brief ACCESS EXCLUSIVE lock on the parent (CONCURRENTLY is not allowed
# while a default partition exists); waiting longer than this would queue every drain behind it.
LOCK_TIMEOUT = "2s"
LOCK_ATTEMPTS = 5
_ESTIMATED_ROWS = "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass"


@dataclass(frozen=True)
class DayPartition:
    name: str
    day: date

    @property
    def start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + DAY


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def is_partitioned() -> bool:
    """True where AccessEvent is a partitioned table (PostgreSQL after migration 0003)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def day_partitions() -> list[DayPartition]:
    """The day partitions attached now, oldest first (the default partition is not listed)."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [name for (name,) in cursor.fetchall()]
    found = [(name, _DAY_NAME.fullmatch(name)) for name in names]
    return sorted(
        (DayPartition(name, datetime.strptime(match.group(1), "%Y%m%d").date()) for name, match in found if match),
        key=lambda partition: partition.day,
    )


def create_partitions(*, now: datetime, days_ahead: int | None = None) -> list[date]:
    """Make sure a partition exists for every day from yesterday to days_ahead
    (TRACKING_PARTITION_DAYS_AHEAD) days from now; returns the days created.

    Rows of such a day already in the default partition (written while it had no partition) are
    moved into the new one in the same transaction. Idempotent; safe to run twice at once (the
    second waits on the default partition's lock, then finds the day exists).
    """
    if not is_partitioned():
        return []
    today = now.astimezone(UTC).date()
    days_ahead = settings.TRACKING_PARTITION_DAYS_AHEAD if days_ahead is None else days_ahead
    existing = {partition.day for partition in day_partitions()}
    created = []
    for offset in range(-1, days_ahead + 1):
        day = today + timedelta(days=offset)
        if day not in existing and _create_partition(day):
            created.append(day)
    return created


def _create_partition(day: date) -> bool:
    """Create one day's partition without blocking inserts into other days: the table is built
    apart, filled from the default partition, then attached (ATTACH needs only a SHARE UPDATE
    EXCLUSIVE lock on the parent, CREATE ... PARTITION OF an ACCESS EXCLUSIVE one)."""
    name = partition_name(day)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # No event may land in the default partition for this day until it is attached (ATTACH
        # takes this lock on the default partition anyway: taken first, it cannot be upgraded into a deadlock).
        cursor.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        cursor.execute("SELECT to_regclass(%s)", [name])
        if cursor.fetchone()[0] is not None:
            return False
        cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)")
        # The bounds as a CHECK first, so ATTACH trusts them instead of scanning the rows.
        cursor.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK (occurred_at >= %s AND occurred_at < %s)",
            [start, start + DAY],
        )
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE occurred_at >= %s AND occurred_at < %s RETURNING *)"
            f" INSERT INTO {name} SELECT * FROM moved",
            [start, start + DAY],
        )
        if cursor.rowcount:
            logger.info("moved %d event(s) of %s out of the default partition", cursor.rowcount, day)
        cursor.execute(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [start, start + DAY]
        )
        cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds")
    return True


@dataclass(frozen=True)
class DroppedPartition:
    name: str
    day: date
    estimated_rows: int  # from the planner's statistics: counting would read the whole day


def drop_partitions_before(*, cutoff: datetime) -> list[DroppedPartition]:
    """Detach, then drop, every day partition whose whole day is before cutoff; oldest first.

    Each day is its own short transaction. A detach that cannot get its lock within
    LOCK_TIMEOUT is retried, so a long query delays pruning instead of stalling the drains.
    Idempotent. Events older than cutoff in a day that is still partly kept stay until the
    whole day is old (retention is exact to the day, never shorter).
    """
    dropped = []
    for partition in day_partitions():
        if partition.end > cutoff:
            break
        with connection.cursor() as cursor:
            cursor.execute(_ESTIMATED_ROWS, [partition.name])
            estimated = int(cursor.fetchone()[0])
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {partition.name}")
                break
            except OperationalError:
                if attempt == LOCK_ATTEMPTS:
                    raise
                time.sleep(attempt)
        # Detached, the table is no one's business but ours: dropping it locks nothing shared.
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {partition.name}")
        dropped.append(DroppedPartition(partition.name, partition.day, estimated))
    return dropped
