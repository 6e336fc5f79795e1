"""Suite-wide fixtures: real PostgreSQL and Redis, isolated per test by a cache key prefix.

Under pytest-xdist (make test runs -n workers) each worker has its own test database (pytest-django
names it test_<name>_gwN), its own Celery queue on the shared broker, and its own slice of ports
(tracker/tests/processes.py); the cache key prefix is per test anyway."""

import os
import uuid
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connection
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from tracker.events import Event

# The embedded backend (SQLite database, SQLite cache: no DATABASE_URL, no REDIS_URL) runs only the
# tests marked `contract`, in a pytest run of its own that endpointstats/tests/test_backends.py starts:
# pytest-django has one DATABASES per run, and the app picks its fallbacks from the connection's vendor.
EMBEDDED_RUN = os.environ.get("ES_TEST_BACKEND") == "sqlite"


@pytest.hookimpl(trylast=True)  # after pytest-django's own ordering (database tests by kind)
def pytest_collection_modifyitems(config, items):
    # The system tests (a private stack each module, the fault suite alone ~4 min) start first, so
    # under xdist the longest file runs while the other workers share the rest, not after it. They
    # use no test database, so moving them ahead of the database tests changes nothing for those.
    items.sort(key=lambda item: not (item.nodeid.startswith("system/") and "django_db" not in item.keywords))
    if EMBEDDED_RUN:

        def embedded(item) -> bool:
            on_cluster = getattr(item, "callspec", None) and item.callspec.params.get("redis_backend") == "cluster"
            return item.get_closest_marker("contract") is not None and not on_cluster

        config.hook.pytest_deselected(items=[item for item in items if not embedded(item)])
        items[:] = [item for item in items if embedded(item)]


@pytest.fixture
def drain():
    """Store what tracked requests buffered (Redis); on the embedded backend each request was stored
    as it was served, so there is nothing to drain."""
    from tracker import services

    def run() -> None:
        if settings.REDIS_URL:
            services.drain_buffer()

    return run


def pytest_sessionstart(session):
    """Refuse to run (not skip) without the real services: the suite means nothing on fakes."""
    problems = []
    if EMBEDDED_RUN:
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" or settings.REDIS_URL:
            pytest.exit("ES_TEST_BACKEND=sqlite needs DATABASE_URL and REDIS_URL unset.", returncode=3)
        return
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        problems.append("DATABASE_URL must point at PostgreSQL (make test sets it).")
    if not settings.REDIS_URL:
        problems.append("REDIS_URL must point at Redis (make test sets it).")
    else:
        try:
            get_redis_connection("default").ping()
        except RedisError as error:
            problems.append(f"Redis at {settings.REDIS_URL} is unreachable: {error}")
    if problems:
        pytest.exit("Test services missing:\n  " + "\n  ".join(problems), returncode=3)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        # Tasks this worker enqueues are consumed by its own in-process Celery worker (console tests),
        # which runs them against this worker's database; purge() empties only this queue.
        from endpointstats.celery import app

        app.conf.task_default_queue = f"celery-test-{worker}"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """Subprocesses that inherit the environment (manage.py, psql, servers) use this worker's test
    database, never the base one named by DATABASE_URL."""
    from tracker.tests.processes import suite_database_url

    base = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = suite_database_url()
    yield
    if base is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = base


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """Each test gets its own key prefix: buffer, counters and cached stats never leak."""
    caches = {alias: dict(config) for alias, config in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = caches
    from tracker import services

    services.reset_redis_backoff()
    yield
    if EMBEDDED_RUN:
        return  # the SQLite cache is a file of this run's own
    try:
        client = get_redis_connection("default")
        keys = list(client.scan_iter(f"{caches['default']['KEY_PREFIX']}:*", count=1000))
        if keys:
            client.delete(*keys)
    except RedisError:
        pass


@pytest.fixture(autouse=True)
def rate_limits_in_shadow_mode(settings):
    """Tests send bursts from one address (100 x /stats is over its 60/min): rate limits only count
    here, they never refuse. ratelimit/tests switches enforcement back on for its own tests."""
    settings.RATELIMIT_SHADOW = True


@pytest.fixture
def postgres_only():
    assert connection.vendor == "postgresql"


@pytest.fixture
def make_event():
    """Build an Event with sensible defaults; override any field by keyword."""

    def build(**fields) -> Event:
        defaults = {
            "endpoint": "/",
            "occurred_at": datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
            "method": "GET",
            "status_code": 200,
            "duration_ms": 1.5,
            "client_ip": "203.0.113.7",
            "user_agent": "pytest",
            "pod_name": "web-0",
        }
        return Event(**(defaults | fields))

    return build


@pytest.fixture(scope="session")
def redis_cluster_url():
    """A real 3-node Redis Cluster on spare loopback ports, started on first use and stopped after the session."""
    from tracker.tests.processes import redis_cluster

    with redis_cluster() as url:
        yield url


def use_redis_cluster(settings, url: str) -> None:
    """Point the cache, and so the buffer and the rate-limit counters, at a Redis Cluster (as REDIS_CLUSTER=true)."""
    caches = {alias: dict(config) for alias, config in settings.CACHES.items()}
    caches["default"]["LOCATION"] = url
    caches["default"]["OPTIONS"] = caches["default"].get("OPTIONS", {}) | {
        "CONNECTION_FACTORY": "endpointstats.redis_cluster.ClusterConnectionFactory",
        "CLIENT_CLASS": "endpointstats.redis_cluster.ClusterClient",
    }
    settings.CACHES = caches
    settings.REDIS_URL = url
    settings.REDIS_CLUSTER = True
    from redis.cluster import RedisCluster

    assert isinstance(get_redis_connection("default"), RedisCluster)


@pytest.fixture
def on_redis_cluster(settings, redis_cluster_url, isolated_cache) -> str:
    """This test's cache, buffer and rate-limit counters on the session's Redis Cluster."""
    use_redis_cluster(settings, redis_cluster_url)
    return redis_cluster_url


@pytest.fixture(params=["standalone", "cluster"])
def redis_backend(request) -> str:
    """Runs a test twice: on the standalone Redis, then on a real Redis Cluster."""
    if request.param == "cluster":
        request.getfixturevalue("on_redis_cluster")
    return request.param
