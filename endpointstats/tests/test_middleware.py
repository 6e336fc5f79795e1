"""The admin's middleware stack runs for the admin only; request metrics count every response."""

import re

import pytest
from django.http import HttpResponse
from django.test import Client
from prometheus_client import REGISTRY

from endpointstats import checks
from endpointstats.middleware import AdminMiddleware

pytestmark = pytest.mark.django_db


def test_api_paths_skip_sessions_csrf_auth_and_messages_and_the_admin_gets_them(rf):
    seen = {}

    def view(request):
        seen[request.path] = [hasattr(request, name) for name in ("session", "user", "_messages")]
        return HttpResponse()

    middleware = AdminMiddleware(view)
    for path in ("/", "/stats", "/analytics/stats", "/admin/", "/admin/login/"):
        request = rf.get(path)
        middleware.process_view(request, view, (), {})
        middleware(request)

    assert seen == {
        "/": [False, False, False],
        "/stats": [False, False, False],
        "/analytics/stats": [False, False, False],
        "/admin/": [True, True, True],
        "/admin/login/": [True, True, True],
    }


def test_an_api_response_sets_no_cookie_and_does_not_vary_on_one(client):
    response = client.get("/")

    assert response.status_code == 200
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")


def test_the_admin_still_logs_in_with_csrf_enforced(django_user_model):
    django_user_model.objects.create_superuser("operator", "operator@example.com", "a-long-password")
    browser = Client(enforce_csrf_checks=True)
    credentials = {"username": "operator", "password": "a-long-password", "next": "/admin/"}

    refused = browser.post("/admin/login/", credentials, HTTP_HOST="localhost")
    page = browser.get("/admin/login/", HTTP_HOST="localhost")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    logged_in = browser.post("/admin/login/", credentials | {"csrfmiddlewaretoken": token}, HTTP_HOST="localhost")
    index = browser.get("/admin/", HTTP_HOST="localhost")

    assert refused.status_code == 403  # CSRF still guards the admin
    assert (logged_in.status_code, logged_in["Location"]) == (302, "/admin/")
    assert index.status_code == 200 and b"<h1>Overview</h1>" in index.content  # the console's index


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_request_metrics_count_by_endpoint_method_and_status_class_and_time_every_response(client):
    ok = {"endpoint": "/", "method": "GET", "status": "2xx"}
    missing = {"endpoint": "<unmatched>", "method": "GET", "status": "4xx"}
    refused = {"endpoint": "/", "method": "DELETE", "status": "4xx"}
    before = [sample("endpointstats_http_requests_total", **labels) for labels in (ok, missing, refused)]
    timed_before = sample("endpointstats_http_request_duration_seconds_count", endpoint="/")

    client.get("/")
    client.get("/")
    client.get("/no/such/page")
    client.delete("/")

    after = [sample("endpointstats_http_requests_total", **labels) for labels in (ok, missing, refused)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]
    assert sample("endpointstats_http_request_duration_seconds_count", endpoint="/") == timed_before + 3
    text = client.get("/metrics").content.decode()
    assert 'endpointstats_http_request_duration_seconds_bucket{endpoint="/",le="0.005"}' in text


def test_the_admin_middleware_must_keep_sessions_csrf_auth_and_messages(settings):
    settings.ADMIN_MIDDLEWARE = [m for m in settings.ADMIN_MIDDLEWARE if "csrf" not in m]

    errors = checks.check_admin_middleware(None)

    assert [e.id for e in errors] == ["endpointstats.E001"]
    assert "CsrfViewMiddleware" in errors[0].msg
