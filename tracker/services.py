"""Writes of the tracking pipeline: buffer events, store them, drain the buffer."""

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction
from django.utils import timezone
from redis.exceptions import LockError, RedisError

from tracker import buffer, queries, storage
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

logger = logging.getLogger(__name__)

# After a failed push, skip Redis for this long: a dead Redis then costs requests
# nothing instead of a connection attempt each.
REDIS_RETRY_AFTER_SECONDS = 2.0
# The drain's lock lives this long past its last batch: a worker killed mid-drain delays the next
# drain by at most this much. A batch slower than this lets a second drain in, which is safe
# (it re-claims the same unacknowledged batch, and storing is idempotent), only wasted work.
DRAIN_LOCK_SECONDS = 15.0
_redis_retry_at = 0.0


def record_events(events: list[Event]) -> None:
    """Hand events to the pipeline without touching the database when Redis is up.

    One RPUSH for the whole list. If Redis is not configured or unreachable, the events
    are stored directly (one transaction), so nothing is lost while the database is up.
    Never raises: an event that cannot be kept anywhere is counted and logged.
    """
    global _redis_retry_at
    if not events:
        return
    if settings.REDIS_URL and time.monotonic() >= _redis_retry_at:
        try:
            buffer.push([event.to_json() for event in events])
        except RedisError as error:
            _redis_retry_at = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
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


@dataclass(frozen=True)
class DrainResult:
    stored: int  # new rows
    claimed: int  # events taken from the buffer (re-deliveries included)
    parked: int  # undecodable events moved aside
    batches: int


def drain_buffer(*, batch_size: int | None = None, time_budget_seconds: float | None = None) -> DrainResult:
    """Move buffered events into the database until the buffer is empty or the budget is spent.

    Safe to run twice at once (the second finds the lock taken and returns at once) and
    safe to kill at any point (an unacknowledged batch is claimed again and the insert
    skips what was already stored).
    """
    batch_size = batch_size or settings.DRAIN_BATCH_SIZE
    budget = settings.DRAIN_TIME_BUDGET_SECONDS if time_budget_seconds is None else time_budget_seconds
    lock = buffer.drain_lock(timeout=DRAIN_LOCK_SECONDS)
    if not lock.acquire():
        return DrainResult(stored=0, claimed=0, parked=0, batches=0)
    stored = claimed = parked = batches = 0
    deadline = time.monotonic() + budget
    try:
        while True:
            payloads = buffer.claim(batch_size=batch_size)
            if not payloads:
                break
            with DRAIN_BATCH_SECONDS.time():
                batch_stored, oldest, bad = _store_batch(payloads)
            buffer.park(bad)  # before the acknowledgement: a crash in between parks twice, loses nothing
            buffer.acknowledge(payloads)
            stored += batch_stored
            if oldest is not None:
                DRAIN_LAG_SECONDS.observe((timezone.now() - oldest).total_seconds())
            claimed += len(payloads)
            parked += len(bad)
            batches += 1
            if time.monotonic() >= deadline:
                break
            try:
                lock.extend(DRAIN_LOCK_SECONDS, replace_ttl=True)
            except LockError:  # this drain stalled past its lock and another took over: leave it the buffer
                break
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: nothing to release
            lock.release()
    EVENTS_DRAINED.inc(stored)
    EVENTS_PARKED.inc(parked)
    return DrainResult(stored=stored, claimed=claimed, parked=parked, batches=batches)


def _store_batch(payloads: list[bytes]) -> tuple[int, datetime | None, list[bytes]]:
    """Store one claimed batch: (events newly stored, oldest event time, payloads to park).

    On PostgreSQL see storage.store_payloads. If any payload is unreadable, the batch is stored
    one event at a time instead, so only the bad ones are parked and the rest is kept.
    """
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
        return _store_one_by_one(payloads)
    events, bad = _decode(payloads)
    oldest = min((event.occurred_at for event in events), default=None)
    return store_events(events), oldest, bad


def _store_one_by_one(payloads: list[bytes]) -> tuple[int, datetime | None, list[bytes]]:
    stored, oldest, bad = 0, None, []
    for payload in payloads:
        try:
            event = Event.from_json(payload)
            stored += store_events([event])
        except (ValueError, KeyError, TypeError, DataError, IntegrityError):
            bad.append(payload)
            continue
        oldest = event.occurred_at if oldest is None else min(oldest, event.occurred_at)
    if bad:
        logger.error("Parked %d unreadable buffered event(s) in %s", len(bad), buffer.dead_letter_key())
    return stored, oldest, bad


def _decode(payloads: list[bytes]) -> tuple[list[Event], list[bytes]]:
    events, bad = [], []
    for payload in payloads:
        try:
            events.append(Event.from_json(payload))
        except (ValueError, KeyError, TypeError):
            bad.append(payload)
    if bad:
        logger.error("Parked %d undecodable buffered event(s) in %s", len(bad), buffer.dead_letter_key())
    return events, bad


def reset_redis_backoff() -> None:
    """Try Redis again on the next event (tests, and after an operator fixed Redis)."""
    global _redis_retry_at
    _redis_retry_at = 0.0
