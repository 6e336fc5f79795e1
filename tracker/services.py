"""Writes of the tracking pipeline: buffer events, store them, drain the buffer."""

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction
from django.utils import timezone
from redis.exceptions import LockError, RedisError, ResponseError

from tracker import buffer, partitions, queries, storage
from tracker.backoff import Backoff
from tracker.events import Event
from tracker.metrics import (
    DRAIN_BATCH_SECONDS,
    DRAIN_LAG_SECONDS,
    EVENTS_BUFFERED,
    EVENTS_DRAINED,
    EVENTS_DROPPED,
    EVENTS_PARKED,
    EVENTS_STORED_DIRECTLY,
)
from tracker.models import AccessEvent

logger = logging.getLogger(__name__)

# After a failed push, skip Redis for this long: a dead Redis then costs requests
# nothing instead of a connection attempt each.
REDIS_RETRY_AFTER_SECONDS = 2.0
# Now and then a drain removes consumers (drain processes) idle this long with nothing pending.
CONSUMER_SWEEP_CHANCE = 0.01
CONSUMER_FORGET_SECONDS = 24 * 3600
_buffer_backoff = Backoff(REDIS_RETRY_AFTER_SECONDS)


def record_events(events: list[Event]) -> None:
    """Hand events to the pipeline without touching the database when Redis is up.

    One RPUSH for the whole list. If Redis is not configured or unreachable, the events
    are stored directly (one transaction), so nothing is lost while the database is up.
    Never raises: an event that cannot be kept anywhere is counted and logged.
    """
    if not events:
        return
    if settings.REDIS_URL and _buffer_backoff.ready():
        try:
            buffer.push([event.to_json() for event in events])
        except RedisError as error:
            _buffer_backoff.failed()
            logger.warning("Event buffer unavailable (%s); storing %d event(s) directly", error, len(events))
        else:
            EVENTS_BUFFERED.inc(len(events))
            return
    try:
        store_events(events)
    except DatabaseError:
        EVENTS_DROPPED.labels(reason="no_storage").inc(len(events))
        logger.exception("Dropped %d event(s): neither Redis nor the database accepted them", len(events))
    else:
        EVENTS_STORED_DIRECTLY.inc(len(events))


@transaction.atomic
def store_events(events: list[Event]) -> int:
    """Store events and add them to the per-endpoint counters, in one transaction.

    Idempotent: an event whose id is already stored is skipped and not counted again.
    Endpoints beyond TRACKING_MAX_ENDPOINTS are stored under the overflow key.
    Returns the number of events newly stored. Raises DataError/IntegrityError for an
    event the database cannot hold (nothing of the call is then stored).
    """
    if not events:
        return 0
    if connection.vendor == "postgresql":
        stored, _ = storage.store_payloads([event.to_json() for event in events])
    else:
        stored = storage.store_with_orm(events)
    if stored:
        transaction.on_commit(queries.forget_cached_stats)
    return stored


@transaction.atomic
def store_generated_events(lines: list[str]) -> int:
    """PostgreSQL: store synthetic events given as COPY text lines (manage.py generate_events) in one
    transaction; see storage.store_copy_lines. Returns how many were new."""
    stored = storage.store_copy_lines(lines)
    if stored:
        transaction.on_commit(queries.forget_cached_stats)
    return stored


@dataclass(frozen=True)
class DrainResult:
    stored: int  # new rows
    claimed: int  # events taken from the buffer (re-deliveries included)
    parked: int  # unreadable events moved to the dead letters
    batches: int

    def __add__(self, other: "DrainResult") -> "DrainResult":
        return DrainResult(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


NOTHING = DrainResult(stored=0, claimed=0, parked=0, batches=0)


def drain_buffer(
    *, batch_size: int | None = None, time_budget_seconds: float | None = None, shards: list[int] | None = None
) -> DrainResult:
    """Drain every shard (or the given ones) that no other drain holds, each until empty or the budget is spent.

    Starts at a random shard so that drains started together spread over the shards. See drain_shard.
    """
    budget = settings.DRAIN_TIME_BUDGET_SECONDS if time_budget_seconds is None else time_budget_seconds
    deadline = time.monotonic() + budget
    if shards is None:
        count = buffer.shard_count()
        first = random.randrange(count)
        shards = [(first + offset) % count for offset in range(count)]
    total = NOTHING
    for shard in shards:
        total += drain_shard(shard=shard, batch_size=batch_size, deadline=deadline)
        if time.monotonic() >= deadline:
            break
    return total


def drain_shard(*, shard: int, batch_size: int | None = None, deadline: float | None = None) -> DrainResult:
    """Move one shard's events into the database until it is empty or the deadline (monotonic) passes.

    At most one drain per shard: a second one finds the shard's lock taken and returns at once.
    Safe to kill at any point: what was read and not acknowledged stays pending in Redis and is
    taken over (XAUTOCLAIM) after DRAIN_CLAIM_IDLE_SECONDS; the insert skips what was already
    stored, so nothing is lost and nothing counted twice. Batches are acknowledged only after
    their transaction commits.
    """
    batch_size = batch_size or settings.DRAIN_BATCH_SIZE
    if deadline is None:
        deadline = time.monotonic() + settings.DRAIN_TIME_BUDGET_SECONDS
    lock = buffer.drain_lock(shard=shard, timeout=settings.DRAIN_LOCK_SECONDS)
    if not lock.acquire():
        return NOTHING
    # One consumer per drain process: drains of one process run one after another.
    consumer = f"{settings.POD_NAME}:{os.getpid()}"
    idle = settings.DRAIN_CLAIM_IDLE_SECONDS
    stored = claimed = parked = batches = 0
    try:
        while True:
            entries = buffer.read(shard=shard, consumer=consumer, count=batch_size, claim_idle_seconds=idle)
            if not entries:
                break
            with DRAIN_BATCH_SECONDS.time():
                batch_stored, oldest, bad = _store_batch(entries)
            bad_ids = {entry_id for entry_id, _ in bad}
            buffer.settle(shard=shard, ids=[i for i, _ in entries if i not in bad_ids], parked=bad)
            stored += batch_stored
            if oldest is not None:
                DRAIN_LAG_SECONDS.observe((timezone.now() - oldest).total_seconds())
            claimed += len(entries)
            parked += len(bad)
            batches += 1
            if time.monotonic() >= deadline:
                break
            try:
                lock.extend(settings.DRAIN_LOCK_SECONDS, replace_ttl=True)
            except LockError:  # this drain stalled past its lock and another took over: leave it the shard
                break
        if random.random() < CONSUMER_SWEEP_CHANCE:  # consumers of drain processes gone for good
            with contextlib.suppress(ResponseError):  # the stream was deleted meanwhile: nothing to sweep
                buffer.forget_idle_consumers(shard=shard, idle_seconds=CONSUMER_FORGET_SECONDS)
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: nothing to release
            lock.release()
    EVENTS_DRAINED.inc(stored)
    EVENTS_PARKED.inc(parked)
    return DrainResult(stored=stored, claimed=claimed, parked=parked, batches=batches)


def _store_batch(entries: list[buffer.Entry]) -> tuple[int, datetime | None, list[buffer.Entry]]:
    """Store one batch: (events newly stored, oldest event time, entries to park).

    On PostgreSQL see storage.store_payloads. If any payload is unreadable, the batch is stored
    one event at a time instead, so only the bad ones are parked and the rest is kept.
    """
    payloads: list[bytes | str] = [payload for _, payload in entries]
    if connection.vendor == "postgresql":
        try:
            with transaction.atomic():
                stored, oldest = storage.store_payloads(payloads)
        except (DataError, IntegrityError) as error:
            logger.warning("A batch of %d holds unreadable event(s) (%s); storing one by one", len(payloads), error)
        else:
            if stored:
                queries.forget_cached_stats()
            return stored, oldest, []
        return _store_one_by_one(entries)
    events, bad = [], []
    for entry in entries:
        try:
            events.append(Event.from_json(entry[1]))
        except (ValueError, KeyError, TypeError):
            bad.append(entry)
    if bad:
        logger.error("Parked %d undecodable buffered event(s) in the dead letters", len(bad))
    oldest = min((event.occurred_at for event in events), default=None)
    return store_events(events), oldest, bad


def _store_one_by_one(entries: list[buffer.Entry]) -> tuple[int, datetime | None, list[buffer.Entry]]:
    stored, oldest, bad = 0, None, []
    for entry in entries:
        try:
            event = Event.from_json(entry[1])
            stored += store_events([event])
        except (ValueError, KeyError, TypeError, DataError, IntegrityError):
            bad.append(entry)
            continue
        oldest = event.occurred_at if oldest is None else min(oldest, event.occurred_at)
    if bad:
        logger.error("Parked %d unreadable buffered event(s) in the dead letters", len(bad))
    return stored, oldest, bad


def reset_redis_backoff() -> None:
    """Try Redis again on the next event (tests, and after an operator fixed Redis)."""
    _buffer_backoff.reset()


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    batches: int
    cutoff: datetime
    slowest_batch_seconds: float
    dropped_partitions: tuple[str, ...] = ()
    dropped_events_estimate: int = 0  # rows of the dropped days, from the planner's statistics


def delete_events_before(
    *,
    cutoff: datetime,
    batch_size: int,
    pause_seconds: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> DeleteResult:
    """Remove the AccessEvents that occurred before `cutoff` (retention decides it). Counters stay.

    On the partitioned PostgreSQL table whole days go: each day partition that ends before the
    cutoff is detached, then dropped (milliseconds, whatever its size; a day partly before the
    cutoff stays until it is wholly before). Only the rows of the default partition (events
    whose day had no partition) are deleted row by row. Elsewhere (SQLite, or before migration
    0003) all old rows are deleted.

    Deletes run in bounded batches, each its own short transaction (row locks on at most
    batch_size rows, found through the occurred_at index), so inserts and reads carry on
    meanwhile. On PostgreSQL a plain VACUUM follows, which makes the freed space reusable at
    once (no table lock, unlike VACUUM FULL). Idempotent and safe to run twice at once.
    """
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
    return DeleteResult(
        deleted=deleted,
        batches=batches,
        cutoff=cutoff,
        slowest_batch_seconds=slowest,
        dropped_partitions=tuple(partition.name for partition in dropped),
        dropped_events_estimate=sum(partition.estimated_rows for partition in dropped),
    )
