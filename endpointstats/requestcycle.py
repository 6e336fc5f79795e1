"""Django's per-request housekeeping, done without walking asgiref's Local on every request.

Django's request_started and request_finished receivers find "every connection this thread has
initialized" through `connections.all(initialized_only=True)` and `caches.all(...)`, which go
through asgiref's Local: three database walks and one cache walk cost about 20 µs of a hot-path
request that touches neither (docs/PERFORMANCE.md). The web and limiter processes
(endpointstats.wsgi, never the test client) replace them at start-up with the same work done for
the connections each thread has actually opened:

- database: Django's close_old_connections (close a connection past CONN_MAX_AGE, left in a
  transaction, or broken after an error; reset the health check) and reset_queries run for the
  wrappers this thread has connected, learned from Django's connection_created signal;
- caches: close() is skipped where every cache is django-redis without CLOSE_CONNECTION (its
  pool outlives requests by design, so its close() does nothing); any other cache (the embedded
  SQLite default) keeps Django's receiver.

WSGI only: under ASGI, Django's connections are per context, not per thread.
"""

import threading
from typing import Any

from django.conf import settings
from django.core.cache import close_caches
from django.core.signals import request_finished, request_started
from django.db import close_old_connections as django_close_old_connections
from django.db import connections
from django.db import reset_queries as django_reset_queries
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"


class _ThreadConnections(threading.local):
    def __init__(self) -> None:
        self.wrappers: list[BaseDatabaseWrapper] = []


_opened = _ThreadConnections()


def remember_connection(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """connection_created receiver: the thread's wrapper joins the ones its requests look after."""
    if not any(wrapper is connection for wrapper in _opened.wrappers):
        _opened.wrappers.append(connection)


def close_old_connections(**kwargs: Any) -> None:
    """Django's close_old_connections, for the connections this thread opened."""
    for wrapper in _opened.wrappers:
        wrapper.close_if_unusable_or_obsolete()


def reset_queries(**kwargs: Any) -> None:
    """Django's reset_queries (the DEBUG query log), for the connections this thread opened."""
    for wrapper in _opened.wrappers:
        wrapper.queries_log.clear()


def track_opened_connections() -> None:
    """Swap Django's database receivers for the ones above (and count the connections already open)."""
    connection_created.connect(remember_connection)
    for wrapper in connections.all(initialized_only=True):
        remember_connection(None, wrapper)
    request_started.disconnect(django_reset_queries)
    request_started.disconnect(django_close_old_connections)
    request_finished.disconnect(django_close_old_connections)
    request_started.connect(reset_queries)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


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


def trim_request_housekeeping() -> None:
    """What the web and limiter processes run at start-up (endpointstats.wsgi)."""
    track_opened_connections()
    skip_noop_cache_close()
