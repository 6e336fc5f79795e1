"""The web processes' per-request housekeeping: Django's work, minus the walks through asgiref's Local.

Run under gunicorn by the fault suite too (system/tests/test_faults.py: PostgreSQL stop and start,
where a broken connection must be replaced on the next request).
"""

import threading
import time

import pytest
from django.core.cache import caches, close_caches
from django.core.signals import request_finished, request_started
from django.db import close_old_connections as django_close_old_connections
from django.db import connections
from django.db import reset_queries as django_reset_queries
from django.db.backends.signals import connection_created
from django.test import override_settings
from django_redis import get_redis_connection

from endpointstats import requestcycle


def _receivers(signal) -> list:
    return [receiver() for _, receiver, *_ in signal.receivers]


@pytest.fixture
def django_receivers_restored():
    yield
    request_finished.connect(close_caches)
    connection_created.disconnect(requestcycle.remember_connection)
    request_started.disconnect(requestcycle.reset_queries)
    request_started.disconnect(requestcycle.close_old_connections)
    request_finished.disconnect(requestcycle.close_old_connections)
    request_started.connect(django_reset_queries)
    request_started.connect(django_close_old_connections)
    request_finished.connect(django_close_old_connections)
    requestcycle._opened.wrappers.clear()


def test_the_database_receivers_are_swapped_for_the_thread_tracking_ones(django_receivers_restored):
    requestcycle.track_opened_connections()

    assert django_close_old_connections not in _receivers(request_started) + _receivers(request_finished)
    assert django_reset_queries not in _receivers(request_started)
    assert requestcycle.close_old_connections in _receivers(request_started)
    assert requestcycle.close_old_connections in _receivers(request_finished)
    assert requestcycle.reset_queries in _receivers(request_started)


@pytest.mark.django_db(transaction=True)  # autocommit, as a request outside a test transaction
def test_a_connection_past_its_max_age_is_closed_at_the_end_of_a_request(django_receivers_restored):
    requestcycle.track_opened_connections()
    closed_in_thread = []

    def a_worker_thread():
        wrapper = connections["default"]
        wrapper.ensure_connection()  # opened after start-up: learned from connection_created
        request_finished.send(sender=None)
        still_open = wrapper.connection is not None
        wrapper.close_at = time.monotonic() - 1  # past CONN_MAX_AGE
        request_finished.send(sender=None)
        closed_in_thread.extend([still_open, wrapper.connection is None, requestcycle._opened.wrappers == [wrapper]])
        wrapper.close()

    thread = threading.Thread(target=a_worker_thread)
    thread.start()
    thread.join(30)

    assert closed_in_thread == [True, True, True]


@pytest.mark.django_db(transaction=True)
def test_a_connection_left_in_a_transaction_is_dropped_at_the_start_of_the_next_request(django_receivers_restored):
    wrapper = connections["default"]
    wrapper.ensure_connection()  # already open at start-up: counted then
    requestcycle.track_opened_connections()
    wrapper.set_autocommit(False)

    request_started.send(sender=None, environ={})

    assert wrapper.connection is None
    wrapper.ensure_connection()
    assert wrapper.get_autocommit()


def test_on_django_redis_the_per_request_cache_close_is_disconnected(settings, django_receivers_restored):
    assert settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache"
    assert close_caches in _receivers(request_finished)

    assert requestcycle.skip_noop_cache_close() is True

    assert close_caches not in _receivers(request_finished)


def test_with_any_other_cache_django_keeps_closing_caches(tmp_path, django_receivers_restored):
    sqlite = {"BACKEND": "endpointstats.sqlite_cache.SQLiteCache", "LOCATION": str(tmp_path / "cache.sqlite3")}
    redis_that_closes = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/0",
        "OPTIONS": {"CLOSE_CONNECTION": True},
    }
    for caches_setting in ({"default": sqlite}, {"default": redis_that_closes}):
        with override_settings(CACHES=caches_setting):
            assert requestcycle.skip_noop_cache_close() is False
        assert close_caches in _receivers(request_finished)


def test_django_redis_close_keeps_the_pooled_connection_the_skip_relies_on(settings):
    """If a django-redis upgrade made close() disconnect, skipping it would change behaviour: this fails first."""
    assert requestcycle.closes_nothing_per_request(settings.CACHES["default"])
    cache = caches["default"]
    cache.set("requestcycle-probe", 1, 5)
    pool = get_redis_connection("default").connection_pool
    connections_before = list(pool._available_connections)  # redis-py keeps the idle ones private
    assert connections_before and all(c._sock is not None for c in connections_before)

    cache.close()

    assert list(pool._available_connections) == connections_before
    assert all(c._sock is not None for c in connections_before)
