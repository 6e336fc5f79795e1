"""Reads of the tracking data: per-endpoint counters, cached for the hot /stats path."""

import contextlib
import logging

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from tracker.models import EndpointStat

logger = logging.getLogger(__name__)

STATS_CACHE_KEY = "tracker:stats"


def endpoint_stats() -> tuple[list[EndpointStat], bool]:
    """All endpoints' counters and whether they came from the cache.

    Cached for STATS_CACHE_SECONDS and forgotten whenever the drain stores events, so a
    warm cache is at most one drain behind. A cache outage falls back to the database.
    """
    try:
        cached = cache.get(STATS_CACHE_KEY)
    except RedisError:
        logger.warning("Cache unavailable; reading /stats from the database")
        cached = None
    if cached is not None:
        return cached, True
    stats = list(EndpointStat.objects.order_by("endpoint"))
    with contextlib.suppress(RedisError):
        cache.set(STATS_CACHE_KEY, stats, settings.STATS_CACHE_SECONDS)
    return stats, False


def forget_cached_stats() -> None:
    try:
        cache.delete(STATS_CACHE_KEY)
    except RedisError:
        logger.warning("Cache unavailable; /stats may be up to %ss stale", settings.STATS_CACHE_SECONDS)


def known_endpoints() -> set[str]:
    """Names of the endpoints that have counters (at most TRACKING_MAX_ENDPOINTS + 1)."""
    return set(EndpointStat.objects.values_list("endpoint", flat=True))
