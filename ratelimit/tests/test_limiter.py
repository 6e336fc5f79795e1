import threading
from collections import Counter

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from endpointstats.settings import env_secret
from ratelimit import services
from ratelimit.tests.conftest import limiter_client

pytestmark = [pytest.mark.django_db, pytest.mark.urls("endpointstats.urls.limiter")]


@pytest.fixture
def limiter(settings) -> APIClient:
    settings.ROLE = "limiter"
    return limiter_client()


@pytest.mark.contract
def test_check_answers_200_with_the_counts_then_429_with_reset_after(limiter, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/stats": 2}
    ip = client_ip_far_from_window_end(60)

    first, second, third = (limiter.get("/check", {"endpoint": "/stats", "client_ip": ip}) for _ in range(3))

    assert first.status_code == 200
    reset_after = first.json()["reset_after"]
    assert 1 <= reset_after <= 60
    assert first.json() == {"allowed": True, "limit": 2, "current": 1, "remaining": 1, "reset_after": reset_after}
    assert second.json()["remaining"] == 0
    assert third.status_code == 429
    assert third.json() == {"allowed": False, "limit": 2, "current": 3, "reset_after": int(third["Retry-After"])}
    assert 1 <= int(third["Retry-After"]) <= 60


@pytest.mark.contract
def test_check_shares_its_counters_with_the_web_role(limiter, client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/": 5}
    ip = client_ip_far_from_window_end(60)
    settings.ROLE, settings.ROOT_URLCONF = "web", "endpointstats.urls.web"
    for _ in range(2):
        assert client.get("/", REMOTE_ADDR=ip).status_code == 200
    settings.ROLE, settings.ROOT_URLCONF = "limiter", "endpointstats.urls.limiter"

    answer = limiter.get("/check", {"endpoint": "/", "client_ip": ip})

    assert (answer.json()["current"], answer.json()["remaining"]) == (3, 2)


@pytest.mark.urls("endpointstats.urls.web")
def test_web_sees_counts_made_through_check(client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/": 2}
    ip = client_ip_far_from_window_end(60)
    for _ in range(2):
        services.check_rate(endpoint="/", client_ip=ip, bounded_endpoint=False)

    assert client.get("/", REMOTE_ADDR=ip).status_code == 429


@pytest.mark.parametrize(
    ("query", "field", "problem"),
    [
        ({"client_ip": "203.0.113.7"}, "endpoint", "This field is required."),
        ({"endpoint": "/stats"}, "client_ip", "This field is required."),
        ({"endpoint": "/stats", "client_ip": "not-an-ip"}, "client_ip", "Enter a valid IPv4 or IPv6 address."),
        ({"endpoint": "/stats", "client_ip": "300.1.1.1"}, "client_ip", "Enter a valid IPv4 or IPv6 address."),
        ({"endpoint": "stats", "client_ip": "203.0.113.7"}, "endpoint", 'An endpoint starts with "/", e.g. /stats.'),
        (
            {"endpoint": "/stats", "client_ip": "203.0.113.7", "ip": "1.2.3.4"},
            "ip",
            "Unknown parameter; /check takes endpoint and client_ip.",
        ),
    ],
)
def test_check_refuses_bad_parameters_with_a_400_saying_what_to_fix_and_counts_nothing(limiter, query, field, problem):
    answer = limiter.get("/check", query)

    assert answer.status_code == 400
    assert answer.json() == {
        "error": "Invalid request",
        "message": "Fix the fields listed in details.",
        "details": {field: [problem]},
    }
    ok = limiter.get("/check", {"endpoint": "/stats", "client_ip": "203.0.113.7"})
    assert ok.json()["current"] == 1


def test_check_is_exact_under_concurrency(limiter, settings, client_ip_far_from_window_end, redis_backend):
    settings.RATE_LIMITS = {"/": 100}
    ip = client_ip_far_from_window_end(60, seconds=30)
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def send() -> None:
        caller = limiter_client()
        start.wait()
        for _ in range(15):
            status = caller.get("/check", {"endpoint": "/", "client_ip": ip}).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Counter(statuses) == {200: 100, 429: 200}


def test_limits_shows_the_rules_in_force(limiter, settings):
    settings.RATE_LIMITS = {"/": 5, "/search": {"rate": "100/m", "burst": "20/10s", "shadow": True}}

    body = limiter.get("/limits").json()

    assert body["rate_limits"]["/"] == {"rate": "5/m", "limit": 5, "window_seconds": 60, "burst": None, "shadow": False}
    assert body["rate_limits"]["/search"] == {
        "rate": "100/m",
        "limit": 100,
        "window_seconds": 60,
        "burst": {"rate": "20/10s", "limit": 20, "window_seconds": 10},
        "shadow": True,
    }
    assert set(body["rate_limits"]) == {"/", "/search", "/stats", "/metrics", "default"}
    assert (body["source"], body["last_error"], body["shadow"], body["fail_open"]) == ("RATE_LIMITS", None, False, True)
    assert body["exempt_paths"] == ["/health", "/metrics", "/admin/", "/api/docs/", "/api/schema/", "/static/"]


def test_health_checks_redis_only_and_the_probes_answer(limiter):
    health = limiter.get("/health")

    assert health.status_code == 200
    assert (health.json()["status"], health.json()["redis"]) == ("healthy", "up")
    assert "database" not in health.json()
    assert health.json()["rate_limits"]["default"] == "120/m"
    assert limiter.get("/health/ready").status_code == 200
    assert limiter.get("/health/live").status_code == 200
    assert limiter.get("/metrics").status_code == 200


def test_the_limiter_role_does_not_limit_its_own_callers(limiter, settings):
    settings.RATE_LIMITS = {"default": 1}

    statuses = [limiter.get("/limits").status_code for _ in range(3)]

    assert statuses == [200, 200, 200]


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Send the limiter token as 'Authorization: Bearer <token>' (LIMITER_TOKEN on the limiter)."),
        ("Bearer wrong-token", "The limiter token is wrong: use the one in the limiter's LIMITER_TOKEN."),
        ("Token test-limiter-token", "Send the limiter token as 'Authorization: Bearer <token>'."),
    ],
)
@pytest.mark.urls("endpointstats.urls.web")
def test_check_without_the_token_is_a_401_and_cannot_lock_a_client_out_of_web(
    client, settings, client_ip_far_from_window_end, authorization, message
):
    settings.RATE_LIMITS = {"/": 2}
    ip = client_ip_far_from_window_end(60)
    settings.ROLE, settings.ROOT_URLCONF = "limiter", "endpointstats.urls.limiter"
    anonymous = APIClient()
    if authorization:
        anonymous.credentials(HTTP_AUTHORIZATION=authorization)

    answers = [anonymous.get("/check", {"endpoint": "/", "client_ip": ip}) for _ in range(5)]

    assert {answer.status_code for answer in answers} == {401}
    assert answers[0].json() == {"error": "Unauthorized", "message": message}
    assert answers[0]["WWW-Authenticate"] == "Bearer"
    settings.ROLE, settings.ROOT_URLCONF = "web", "endpointstats.urls.web"
    assert client.get("/", REMOTE_ADDR=ip).status_code == 200  # nothing was counted


def test_check_is_refused_with_a_503_when_no_token_is_configured(limiter, settings):
    settings.LIMITER_TOKENS = []

    answer = limiter.get("/check", {"endpoint": "/stats", "client_ip": "203.0.113.7"})

    assert answer.status_code == 503
    assert answer.json()["message"] == (
        "No limiter token is configured: set LIMITER_TOKEN or LIMITER_TOKEN_FILE on the limiter."
    )


def test_any_of_several_tokens_is_accepted_during_a_rotation(settings):
    settings.ROLE = "limiter"
    settings.LIMITER_TOKENS = ["old-token", "new-token"]
    for token in ("old-token", "new-token"):
        caller = APIClient()
        caller.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        assert caller.get("/check", {"endpoint": "/stats", "client_ip": "203.0.113.8"}).status_code == 200


def test_the_token_is_read_from_the_mounted_file_named_by_limiter_token_file(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    monkeypatch.setenv("LIMITER_TOKEN", "from-the-variable")
    monkeypatch.setenv("LIMITER_TOKEN_FILE", str(token_file))

    assert env_secret("LIMITER_TOKEN") == "from-the-file"
    monkeypatch.delenv("LIMITER_TOKEN_FILE")
    assert env_secret("LIMITER_TOKEN") == "from-the-variable"
    monkeypatch.setenv("LIMITER_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="LIMITER_TOKEN_FILE="):
        env_secret("LIMITER_TOKEN")
