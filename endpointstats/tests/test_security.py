"""HTTPS settings from the environment: what a browser sees when the prod overlay turns them on."""

import pytest
from django.test import Client

pytestmark = [pytest.mark.django_db, pytest.mark.urls("endpointstats.urls.web")]


@pytest.fixture
def https_on(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = ["^health", "^metrics"]
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True


def test_plain_http_is_redirected_to_https_except_probes_and_metrics(https_on):
    client = Client()

    assert client.get("/stats").status_code == 301
    assert client.get("/stats")["Location"] == "https://testserver/stats"
    assert client.get("/health/live").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_https_behind_the_proxy_gets_hsts_and_secure_cookies(https_on):
    client = Client(HTTP_X_FORWARDED_PROTO="https")

    answer = client.get("/stats")
    login = client.get("/admin/login/")

    assert answer.status_code == 200
    assert answer["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert login.cookies["csrftoken"]["secure"] is True
