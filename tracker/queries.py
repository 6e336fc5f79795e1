"""Reads of the tracking data: per-endpoint counters and the greeting, cached for the hot paths.

Both are cached twice: in Redis (shared by every process, the tier the drain clears) and, in
front of it, for at most LOCAL_CACHE_SECONDS in each process (tracker.localcache), so a warm
read costs no Redis round trip.
"""

import contextlib
import logging
import time
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from tracker import localcache
from tracker.models import EndpointStat

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
        return local, True
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
        return local, True
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
