"""Django's per-request cache close is skipped only where it would do nothing (django-redis)."""

import pytest
from django.core.cache import caches, close_caches
from django.core.signals import request_finished
from django.test import override_settings
from django_redis import get_redis_connection

from endpointstats.requestcycle import closes_nothing_per_request, skip_noop_cache_close


def _receivers_include_close_caches() -> bool:
    return close_caches in [receiver() for _, receiver, *_ in request_finished.receivers]


@pytest.fixture
def close_caches_restored():
    yield
    request_finished.connect(close_caches)


def test_on_django_redis_the_per_request_close_is_disconnected(settings, close_caches_restored):
    assert settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache"
    assert _receivers_include_close_caches()

    assert skip_noop_cache_close() is True

    assert not _receivers_include_close_caches()


def test_with_any_other_cache_django_keeps_closing_caches(tmp_path, close_caches_restored):
    sqlite = {"BACKEND": "endpointstats.sqlite_cache.SQLiteCache", "LOCATION": str(tmp_path / "cache.sqlite3")}
    redis_that_closes = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/0",
        "OPTIONS": {"CLOSE_CONNECTION": True},
    }
    for caches_setting in ({"default": sqlite}, {"default": redis_that_closes}):
        with override_settings(CACHES=caches_setting):
            assert skip_noop_cache_close() is False
        assert _receivers_include_close_caches()


def test_django_redis_close_keeps_the_pooled_connection_the_skip_relies_on(settings):
    """If a django-redis upgrade made close() disconnect, skipping it would change behaviour: this fails first."""
    assert closes_nothing_per_request(settings.CACHES["default"])
    cache = caches["default"]
    cache.set("requestcycle-probe", 1, 5)
    pool = get_redis_connection("default").connection_pool
    connections_before = list(pool._available_connections)  # redis-py keeps the idle ones private
    assert connections_before and all(c._sock is not None for c in connections_before)

    cache.close()

    assert list(pool._available_connections) == connections_before
    assert all(c._sock is not None for c in connections_before)
