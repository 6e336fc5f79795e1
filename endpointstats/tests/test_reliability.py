"""Reliability wiring: task time limits, the patched broker transport, Redis persistence reporting."""

import logging

import pytest
from django.conf import settings
from django_redis import get_redis_connection

from endpointstats.broker import Transport
from endpointstats.celery import app
from tracker import health
from tracker.tests.processes import private_redis

OUR_APPS = ("tracker.", "ratelimit.", "analytics.")


def test_every_task_has_a_soft_time_limit_below_its_hard_one():
    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if name.startswith(OUR_APPS)}

    assert set(ours) == set(settings.TASK_TIME_LIMITS)  # a new task needs its own, measured, limits
    for name, task in ours.items():
        assert 0 < task.soft_time_limit < task.time_limit, name


def test_the_drain_may_spend_its_whole_budget_before_its_soft_limit():
    soft, hard = settings.TASK_TIME_LIMITS["tracker.tasks.drain_shard_task"]
    assert soft >= settings.DRAIN_TIME_BUDGET_SECONDS + 10  # room for the batch under way when the budget ends


def test_the_worker_uses_the_redis_transport_that_survives_a_broker_crash():
    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, Transport)


@pytest.fixture
def redis_without_persistence(settings):
    with private_redis() as (port, _):  # --save "" --appendonly no, like most development machines
        caches = {alias: dict(config) for alias, config in settings.CACHES.items()}
        caches["default"]["LOCATION"] = f"redis://127.0.0.1:{port}/0"
        settings.CACHES = caches
        yield get_redis_connection("default")


@pytest.mark.django_db
def test_a_redis_without_persistence_is_reported_loudly(redis_without_persistence, client, caplog):
    with caplog.at_level(logging.INFO, logger="tracker.health"):
        assert health.log_redis_persistence() == "none"

    assert [(r.levelno, "NO persistence" in r.getMessage()) for r in caplog.records] == [(logging.ERROR, True)]
    assert client.get("/health").json()["redis_persistence"] == "none"
    assert 'endpointstats_redis_persistent{mode="none"} 0.0' in client.get("/metrics").content.decode()


@pytest.mark.django_db
def test_redis_with_an_append_only_file_is_reported_as_persistent(redis_without_persistence, client, caplog):
    redis_without_persistence.config_set("appendonly", "yes")

    with caplog.at_level(logging.INFO, logger="tracker.health"):
        assert health.log_redis_persistence() == "aof-everysec"

    assert all(record.levelno == logging.INFO for record in caplog.records)
    assert client.get("/health").json()["redis_persistence"] == "aof-everysec"
    assert 'endpointstats_redis_persistent{mode="aof-everysec"} 1.0' in client.get("/metrics").content.decode()


def test_snapshots_only_are_persistent_but_warned_about(redis_without_persistence, caplog):
    redis_without_persistence.config_set("save", "3600 1")

    with caplog.at_level(logging.INFO, logger="tracker.health"):
        assert health.log_redis_persistence() == "rdb"

    assert [record.levelno for record in caplog.records] == [logging.WARNING]
