import shutil
import tempfile
import time

import pytest
import redis
from django_ratelimit.core import _get_window
from rest_framework.test import APIClient

from ratelimit import services
from system.processes import free_port, start_redis, wait_for_port

LIMITER_TOKEN = "test-limiter-token"


def limiter_client() -> APIClient:
    """A caller of the limiter role holding its token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {LIMITER_TOKEN}")
    return client


@pytest.fixture(autouse=True)
def fresh_limiter(settings):
    """Every test starts with the reference rules, enforcement on, and no remembered Redis failure."""
    settings.RATE_LIMITS_FILE = ""
    settings.RATE_LIMITS = ""
    settings.RATELIMIT_SHADOW = False
    settings.RATELIMIT_FAIL_OPEN = True
    settings.TRUSTED_PROXY_COUNT = 0
    settings.LIMITER_TOKENS = [LIMITER_TOKEN]
    services.reset_redis_backoff()
    yield
    services.reset_redis_backoff()


@pytest.fixture
def client_ip_far_from_window_end():
    """An address whose windows (each window length given) all have at least `seconds` left.

    django-ratelimit staggers each client's window edges; picking the client keeps a test that
    expects one window from straddling two, without sleeping or timing anything.
    """

    def pick(*windows: int, seconds: int = 5) -> str:
        for last in range(1, 255):
            for third in range(0, 255):
                ip = f"198.51.{third}.{last}"
                value = services.client_key(ip)
                now = int(time.time())
                if all(_get_window(value, window) - now >= seconds for window in windows):
                    return ip
        raise AssertionError("no address found")  # pragma: no cover

    return pick


@pytest.fixture
def private_redis(settings):
    """A redis-server of this test's own on a free loopback port, used as the cache; stop() kills it."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="ratelimit-redis-")
    process = start_redis(port=port, workdir=workdir)
    try:
        wait_for_port(port, timeout=5, process=process)
    except (RuntimeError, TimeoutError):
        process.kill()
        raise
    client = redis.Redis(host="127.0.0.1", port=port)
    caches = {alias: dict(config) for alias, config in settings.CACHES.items()}
    caches["default"]["LOCATION"] = f"redis://127.0.0.1:{port}/0"
    settings.CACHES = caches

    class PrivateRedis:
        url = f"redis://127.0.0.1:{port}/0"

        @staticmethod
        def stop() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    yield PrivateRedis
    PrivateRedis.stop()
    client.close()
    shutil.rmtree(workdir, ignore_errors=True)
