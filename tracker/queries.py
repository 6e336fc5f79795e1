"""Reads of the tracking data: per-endpoint counters and the greeting (cached for the hot paths),
and the stream of stored AccessEvents by id (what live aggregation follows).

The counters and the greeting are cached twice: in Redis (shared by every process, the tier the drain clears) and, in
front of it, for at most LOCAL_CACHE_SECONDS in each process (tracker.localcache), so a warm
read costs no Redis round trip.
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Max
from redis.exceptions import RedisError

from tracker import localcache
from tracker.models import AccessEvent, EndpointStat

logger = logging.getLogger(__name__)

STATS_CACHE_KEY = "tracker:stats"
WELCOME_MESSAGE = "Welcome to the API Access Tracker"
WELCOME_CACHE_SECONDS = 60


def welcome_message() -> tuple[str, bool]:
    """The greeting and whether it came from a cache (the reference design caches it per pod).

    A cache outage answers the greeting uncached.
    """
    name = f"tracker:welcome:{settings.POD_NAME}"
    local = localcache.get(name)
    if local is not None:
        return cast(str, local), True
    try:
        message = cache.get(name)
        if message is None:
            cache.set(name, WELCOME_MESSAGE, WELCOME_CACHE_SECONDS)
    except RedisError:
        return WELCOME_MESSAGE, False
    # The shared entry lives up to WELCOME_CACHE_SECONDS from now (less if it was older).
    localcache.put(name, message or WELCOME_MESSAGE, shared_expires_at=time.time() + WELCOME_CACHE_SECONDS)
    return message or WELCOME_MESSAGE, message is not None


def endpoint_stats() -> tuple[list[dict], bool]:
    """All endpoints' counters as JSON-ready rows (the /stats contract), and whether they came
    from a cache.

    At most STATS_CACHE_SECONDS old, from whichever tier answers. The drain forgets the Redis
    entry whenever it stores events; other processes' local copies follow within
    LOCAL_CACHE_SECONDS. A cache outage falls back to the database.
    """
    local = localcache.get(STATS_CACHE_KEY)
    if local is not None:
        return cast(list[dict], local), True

    try:
        cached = cache.get(STATS_CACHE_KEY)
    except RedisError:
        logger.warning("Cache unavailable; reading /stats from the database")
        cached = None
    if isinstance(cached, dict):  # {"rows": [...], "cached_at": unix time}
        expires_at = cached["cached_at"] + settings.STATS_CACHE_SECONDS
        localcache.put(STATS_CACHE_KEY, cached["rows"], shared_expires_at=expires_at)
        return cached["rows"], True
    rows = [stat_row(stat) for stat in EndpointStat.objects.order_by("endpoint")]
    now = time.time()
    with contextlib.suppress(RedisError):
        cache.set(STATS_CACHE_KEY, {"rows": rows, "cached_at": now}, settings.STATS_CACHE_SECONDS)
        localcache.put(STATS_CACHE_KEY, rows, shared_expires_at=now + settings.STATS_CACHE_SECONDS)
    return rows, False


def stat_row(stat: EndpointStat) -> dict:
    """One /stats row (times in seconds, success_rate in percent), as the OpenAPI schema describes it."""
    return {
        "endpoint": stat.endpoint,
        "access_count": stat.access_count,
        "success_count": stat.success_count,
        "error_count": stat.error_count,
        "last_accessed": _iso(stat.last_accessed_at),
        "response_time": None if stat.last_response_time_ms is None else stat.last_response_time_ms / 1000.0,
        "avg_response_time": None if stat.avg_response_time_ms is None else stat.avg_response_time_ms / 1000.0,
        "success_rate": stat.success_rate,
        "pod_name": stat.last_pod_name,
    }


def _iso(moment: datetime | None) -> str | None:
    """As DRF's DateTimeField writes it: ISO 8601, UTC as "Z"."""
    if moment is None:
        return None
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def forget_cached_stats() -> None:
    """Forget the cached /stats: at once in Redis and in this process, within LOCAL_CACHE_SECONDS elsewhere."""
    localcache.forget(STATS_CACHE_KEY)
    try:
        cache.delete(STATS_CACHE_KEY)
    except RedisError:
        logger.warning("Cache unavailable; /stats may be up to %ss stale", settings.STATS_CACHE_SECONDS)


def known_endpoints() -> set[str]:
    """Names of the endpoints that have counters (at most TRACKING_MAX_ENDPOINTS + 1)."""
    return set(EndpointStat.objects.values_list("endpoint", flat=True))


# --- the stream of stored events (live aggregation) ---------------------------------------------


@dataclass(frozen=True)
class StreamPosition:
    """A point in the stream of stored events (live aggregation reads the stream from one to the next)."""

    event_id: int  # the newest AccessEvent id handed out so far (0: none yet)
    writers: str  # PostgreSQL: the other transactions of this database running just after ("pid:xid,...")


def stream_position() -> StreamPosition:
    """Where the stream of stored events is now. Every id up to event_id belongs to a transaction
    that had finished or is listed in writers, so it is final once those have finished.

    Writers are read from pg_stat_activity, which shows the sessions of the same role (the
    drains use the app's DATABASE_URL); only this database's transactions count.
    """
    table = AccessEvent._meta.db_table
    if connection.vendor != "postgresql":
        return StreamPosition(AccessEvent.objects.aggregate(newest=Max("id"))["newest"] or 0, "")
    with connection.cursor() as cursor:
        # In this order: the id first, then who is still writing (an id handed out before that
        # belongs to a transaction that has finished or is listed).
        cursor.execute(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass), 0)", [table]
        )
        (event_id,) = cursor.fetchone()
        return StreamPosition(int(event_id), ",".join(_running_writers(cursor)))


def _running_writers(cursor: CursorWrapper) -> list[str]:
    """Transactions with an id running now in this database (this one aside), as "pid:xid"."""
    cursor.execute("SELECT pg_stat_clear_snapshot()")  # pg_stat_activity is otherwise frozen per transaction
    cursor.execute(
        "SELECT pid || ':' || backend_xid FROM pg_stat_activity"
        " WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
    )
    return [writer for (writer,) in cursor.fetchall()]


def position_is_final(position: StreamPosition) -> bool:
    """True once every transaction that was running at `position` has finished: no event with an
    id up to position.event_id can appear any more."""
    if not position.writers:
        return True
    with connection.cursor() as cursor:
        return not set(position.writers.split(",")) & set(_running_writers(cursor))


def hours_with_new_events(*, after_event_id: int, up_to_event_id: int, before: datetime) -> list[datetime]:
    """The hours before `before` that events with ids in (after_event_id, up_to_event_id] belong to
    (events stored since then for earlier hours: late ones). Reads the primary key's id range."""
    rows = AccessEvent.objects.filter(id__gt=after_event_id, id__lte=up_to_event_id, occurred_at__lt=before)
    if connection.vendor != "postgresql":
        return sorted({_hour_of(moment) for moment in rows.values_list("occurred_at", flat=True)})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT date_trunc('hour', occurred_at) FROM {AccessEvent._meta.db_table}"
            " WHERE id > %s AND id <= %s AND occurred_at < %s ORDER BY 1",
            [after_event_id, up_to_event_id, before],
        )
        return [hour for (hour,) in cursor.fetchall()]


def _hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
