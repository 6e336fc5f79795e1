"""Starting the product: the embedded default, cold starts on an empty database, settings errors."""

import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from django.conf import settings

from system.processes import REPO
from tracker.tests.processes import gunicorn, http_get, manage


def test_the_embedded_default_starts_and_serves_without_postgres_or_redis(tmp_path):
    env = {"SQLITE_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "test-only"}
    migrated = manage("migrate", "--no-input", env=env)
    assert migrated.returncode == 0, migrated.stderr

    with gunicorn(env=env, workers=1) as (url, _):
        status, body = http_get(url + "/")
        assert status == 200
        assert http_get(url + "/")[0] == 200
        stats = http_get(url + "/stats")[1].decode()
        health = http_get(url + "/health")[1].decode()

    assert b"Welcome to the API Access Tracker" in body
    # No buffer without Redis: events are stored directly, so /stats already counts them.
    assert '"endpoint":"/","access_count":2' in stats
    assert '"redis":"not configured"' in health


@pytest.fixture
def empty_postgres_database():
    name = f"es_cold_{uuid.uuid4().hex[:8]}"
    params = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
    admin = psycopg2.connect(**params)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_cold_start_of_two_workers_on_an_empty_database_never_fails(empty_postgres_database, attempt):
    env = {
        "DATABASE_URL": empty_postgres_database,
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": f"cold{attempt}",
    }
    migrated = manage("migrate", "--no-input", env=env)  # as make run and the Kubernetes Job do, before serving
    assert migrated.returncode == 0, migrated.stderr

    with gunicorn(env=env, workers=2) as (url, process):
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda _: http_get(url + "/")[0], range(40)))
        metrics = http_get(url + "/metrics")[1].decode()

    assert statuses == [200] * 40
    # Both workers' counts are in one scrape (prometheus_client multiprocess mode).
    served = re.findall(r'endpointstats_http_requests_total\{[^}]*endpoint="/"[^}]*\} (\S+)', metrics)
    assert sum(float(value) for value in served) == 40


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"DJANGO_DEBUG": "false"}, "Set the DJANGO_SECRET_KEY environment variable"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be true or false"),
        ({"DJANGO_SECRET_KEY": "x", "ROLE": "api"}, "ROLE must be one of"),
        ({"DJANGO_SECRET_KEY": "x", "BUFFER_SHARDS": "0"}, "BUFFER_SHARDS must be at least 1"),
        (
            {"DJANGO_SECRET_KEY": "x", "REDIS_URL": "redis://127.0.0.1:7000/0", "REDIS_CLUSTER": "true"},
            "Celery cannot use Redis Cluster as its broker: set CELERY_BROKER_URL",
        ),
    ],
)
def test_a_missing_or_invalid_setting_stops_startup_with_a_message_naming_it(environment, message):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "endpointstats.settings", **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert message in result.stderr
