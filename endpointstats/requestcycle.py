"""Django's per-request housekeeping, trimmed to what this project's caches need.

At the end of every request Django's `close_caches` (a request_finished receiver) walks every
cache the thread has used and calls its close(). On django-redis that close() does nothing unless
CLOSE_CONNECTION is set: its connection pool outlives requests, by design. Finding the caches is
not free, though (asgiref's Local, about 10 µs a request on the hot path, docs/PERFORMANCE.md),
so where every configured cache is such a django-redis cache, the web and limiter processes
disconnect the receiver at start-up (endpointstats.wsgi). Any other cache (the embedded SQLite
default, a test's locmem) keeps Django's behaviour.
"""

from typing import Any

from django.conf import settings
from django.core.cache import close_caches
from django.core.signals import request_finished

DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"


def closes_nothing_per_request(cache: dict[str, Any]) -> bool:
    """True for a django-redis cache whose close() is a no-op (CLOSE_CONNECTION off, its default)."""
    close_connection = cache.get("OPTIONS", {}).get(
        "CLOSE_CONNECTION", getattr(settings, "DJANGO_REDIS_CLOSE_CONNECTION", False)
    )
    return cache.get("BACKEND") == DJANGO_REDIS_BACKEND and not close_connection


def skip_noop_cache_close() -> bool:
    """Stop closing caches after each request where every cache's close() is a no-op; True if stopped."""
    if all(closes_nothing_per_request(cache) for cache in settings.CACHES.values()):
        return request_finished.disconnect(close_caches)
    return False
