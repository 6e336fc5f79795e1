import pytest
from prometheus_client import REGISTRY

from ratelimit import services
from ratelimit.tests.conftest import limiter_client

pytestmark = pytest.mark.django_db


def errors(endpoint: str) -> float:
    return (
        REGISTRY.get_sample_value("endpointstats_ratelimit_decisions_total", {"endpoint": endpoint, "outcome": "error"})
        or 0.0
    )


def test_redis_unreachable_fails_open_by_default(client, settings, private_redis):
    settings.RATE_LIMITS = {"/": 1}
    assert client.get("/", REMOTE_ADDR="203.0.113.70").status_code == 200
    assert client.get("/", REMOTE_ADDR="203.0.113.70").status_code == 429
    before = errors("/")

    private_redis.stop()
    responses = [client.get("/", REMOTE_ADDR="203.0.113.70") for _ in range(2)]

    assert [r.status_code for r in responses] == [200, 200]
    assert not any(r.has_header("RateLimit") for r in responses)  # counts unknown: nothing advertised
    assert errors("/") == before + 2


def test_redis_unreachable_fails_closed_when_configured(client, settings, private_redis):
    settings.RATELIMIT_FAIL_OPEN = False
    private_redis.stop()

    response = client.get("/", REMOTE_ADDR="203.0.113.71")

    assert response.status_code == 503
    assert response.json() == {
        "error": "Rate limiting unavailable",
        "message": "Requests cannot be counted right now, so they are refused. Retry in a moment.",
    }
    assert response["Retry-After"] == "1"


def test_shadow_mode_never_refuses_even_when_failing_closed(client, settings, private_redis):
    settings.RATELIMIT_FAIL_OPEN = False
    settings.RATE_LIMITS = {"/": {"rate": 5, "shadow": True}}
    private_redis.stop()

    assert client.get("/", REMOTE_ADDR="203.0.113.75").status_code == 200
    assert client.get("/stats", REMOTE_ADDR="203.0.113.75").status_code == 503  # enforced endpoint


def test_a_failed_redis_is_retried_after_the_backoff(client, settings, private_redis):
    settings.RATE_LIMITS = {"/": 5}
    private_redis.stop()
    decision = services.check_rate(endpoint="/", client_ip="203.0.113.72")
    assert decision.outcome == services.ERROR

    settings.CACHES = {  # Redis is back (the suite's own server)
        alias: dict(config, LOCATION=settings.REDIS_URL) for alias, config in settings.CACHES.items()
    }
    assert services.check_rate(endpoint="/", client_ip="203.0.113.72").outcome == services.ERROR  # backing off
    services.reset_redis_backoff()  # what the passing of REDIS_RETRY_AFTER_SECONDS does
    assert services.check_rate(endpoint="/", client_ip="203.0.113.72").outcome == services.ALLOWED


@pytest.mark.urls("endpointstats.urls.limiter")
@pytest.mark.parametrize("fail_open", [True, False])
def test_limiter_check_and_health_with_redis_unreachable(settings, private_redis, fail_open):
    settings.ROLE = "limiter"
    settings.RATELIMIT_FAIL_OPEN = fail_open
    settings.RATE_LIMITS = {"/stats": 60}
    limiter = limiter_client()
    private_redis.stop()

    check = limiter.get("/check", {"endpoint": "/stats", "client_ip": "203.0.113.73"})
    health = limiter.get("/health")

    if fail_open:
        assert check.status_code == 200
        assert check.json() == {
            "allowed": True,
            "limit": 60,
            "current": 0,
            "remaining": 60,
            "redis_status": "unavailable",
        }
    else:
        assert check.status_code == 503
        assert check.json() == {
            "allowed": False,
            "limit": 60,
            "current": 0,
            "reset_after": 1,
            "redis_status": "unavailable",
        }
        assert check["Retry-After"] == "1"
    assert health.status_code == 503
    assert (health.json()["status"], health.json()["redis"]) == ("unhealthy", "down")
    assert limiter.get("/health/ready").status_code == 200  # keeps answering by its failure policy


def test_shadow_mode_in_the_limiter_allows_and_says_so(settings):
    settings.RATE_LIMITS = {"/x": {"rate": 1, "shadow": True}}

    first = services.check_rate(endpoint="/x", client_ip="203.0.113.74")
    second = services.check_rate(endpoint="/x", client_ip="203.0.113.74")

    assert (first.outcome, second.outcome) == (services.ALLOWED, services.SHADOW)
    assert second.allowed
