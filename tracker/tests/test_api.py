"""The public API's JSON contracts (paths and fields of the reference design)."""

import json
import time
from datetime import datetime

import pytest
from django.core.cache import cache
from rest_framework.authentication import BaseAuthentication
from rest_framework.test import APIClient

from tracker import localcache, queries, services
from tracker.api.serializers import EndpointStatOutput
from tracker.api.views import HotPublicView
from tracker.models import EndpointStat

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return APIClient()


def test_welcome_has_the_reference_fields_and_uses_the_cache(client, settings):
    first = client.get("/")
    second = client.get("/")

    assert first.status_code == second.status_code == 200
    body = first.json()
    assert set(body) == {"message", "pod", "timestamp", "from_cache"}
    assert body["message"] == "Welcome to the API Access Tracker"
    assert body["pod"] == settings.POD_NAME
    datetime.fromisoformat(body["timestamp"])
    assert (first.json()["from_cache"], second.json()["from_cache"]) == (False, True)


@pytest.mark.contract
def test_stats_lists_every_endpoint_with_the_reference_fields(client, drain):
    for _ in range(3):
        client.get("/")
    client.get("/no-such-page")
    drain()

    body = client.get("/stats").json()

    by_name = {row["endpoint"]: row for row in body["endpoints"]}
    assert set(by_name) == {"/", "<unmatched>"}
    root = by_name["/"]
    assert {"endpoint", "access_count", "last_accessed", "response_time", "success_rate", "pod_name"} <= set(root)
    assert root["access_count"] == 3
    assert root["success_rate"] == 100.0
    assert root["response_time"] > 0
    assert body["from_cache"] is False


def test_stats_is_served_from_the_cache_until_the_next_drain(client, django_capture_on_commit_callbacks):
    client.get("/")
    services.drain_buffer()
    assert client.get("/stats").json()["from_cache"] is False
    assert client.get("/stats").json()["from_cache"] is True

    with django_capture_on_commit_callbacks(execute=True):
        services.drain_buffer()  # stores the two /stats requests: the cached copy is forgotten

    body = client.get("/stats").json()
    assert body["from_cache"] is False
    assert {row["endpoint"]: row["access_count"] for row in body["endpoints"]}["/stats"] == 2


def test_health_reports_database_and_redis(client):
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "database", "redis", "redis_persistence", "hostname", "timestamp"}
    assert (body["status"], body["database"], body["redis"]) == ("healthy", "up", "up")


def test_liveness_and_readiness_probes_answer(client):
    assert client.get("/health/live").json()["status"] == "alive"
    assert client.get("/health/ready").status_code == 200


def test_probes_and_scrapes_are_not_tracked(client):
    client.get("/health")
    client.get("/metrics")
    client.get("/", HTTP_USER_AGENT="kube-probe/1.31")

    services.drain_buffer()

    assert not EndpointStat.objects.exists()


def test_metrics_is_prometheus_text(client):
    client.get("/")
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "endpointstats_events_buffered_total" in text
    assert 'endpointstats_buffer_events{list="queued"}' in text


def test_openapi_schema_describes_the_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/", "/stats", "/health"} <= set(schema["paths"])
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        (
            "get",
            "/does/not/exist",
            404,
            {"error": "Not found", "message": "No endpoint at /does/not/exist. See /api/docs/ for the API."},
        ),
        ("post", "/stats", 405, {"error": "Method not allowed", "message": 'Method "POST" not allowed.'}),
        ("delete", "/", 405, {"error": "Method not allowed", "message": 'Method "DELETE" not allowed.'}),
        ("put", "/health", 405, {"error": "Method not allowed", "message": 'Method "PUT" not allowed.'}),
    ],
)
def test_bad_requests_get_a_json_error_not_a_500(client, method, path, status, body):
    response = client.generic(method.upper(), path, data="{not json", content_type="application/json")

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json() == body  # the error names the problem; the broken body is never parsed


@pytest.mark.contract
def test_stats_rows_are_exactly_what_the_schema_serializer_describes(client, drain):
    client.get("/")
    client.get("/", REMOTE_ADDR="203.0.113.9")
    client.get("/nowhere")
    drain()
    # Read before the /stats request, which the embedded backend stores (and so counts) at once.
    expected = EndpointStatOutput(EndpointStat.objects.order_by("endpoint"), many=True).data

    body = client.get("/stats").json()  # plain dicts rendered by orjson on the hot path

    assert body["endpoints"] == json.loads(json.dumps(expected))
    assert client.get("/stats").json()["endpoints"] == body["endpoints"]  # warm: the same rows


def test_hot_endpoints_are_described_in_the_schema_from_their_serializers(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    components = schema["components"]["schemas"]
    assert set(components["WelcomeOutput"]["properties"]) == {"message", "pod", "timestamp", "from_cache"}
    assert {"endpoints", "from_cache"} == set(components["StatsOutput"]["properties"])
    assert "success_rate" in components["EndpointStatOutput"]["properties"]
    ok = schema["paths"]["/stats"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/StatsOutput"}


def test_a_warm_stats_in_another_process_follows_a_drain_within_the_local_cache_time(client):
    client.get("/")
    services.drain_buffer()
    assert client.get("/stats").json()["from_cache"] is False
    assert client.get("/stats").json()["from_cache"] is True  # this process's copy

    # Another process (the worker's drain) forgets the shared entry; this process's copy is
    # then served until it is LOCAL_CACHE_SECONDS old, never longer.
    cache.delete(queries.STATS_CACHE_KEY)
    assert client.get("/stats").json()["from_cache"] is True
    localcache.forget(queries.STATS_CACHE_KEY)  # as when LOCAL_CACHE_SECONDS have passed
    assert client.get("/stats").json()["from_cache"] is False


def test_a_local_copy_never_outlives_the_shared_entry_it_came_from(settings):
    settings.LOCAL_CACHE_SECONDS = 60
    localcache.put("k", "value", shared_expires_at=time.time() + 60)
    assert localcache.get("k") == "value"

    localcache.put("k", "value", shared_expires_at=time.time() - 1)  # the shared entry already expired

    assert localcache.get("k") is None


class RecordingAuthentication(BaseAuthentication):
    calls = 0

    def authenticate(self, request):
        RecordingAuthentication.calls += 1
        return None


@pytest.mark.parametrize("path", ["/", "/stats"])
def test_the_hot_public_views_do_not_authenticate_nor_mind_credentials(client, path, monkeypatch):
    """Authentication is lazy on the hot paths (nothing reads request.user): a configured authenticator
    is never run, and a request with credentials, even bogus ones, is served as any other."""
    monkeypatch.setattr(HotPublicView, "authentication_classes", [RecordingAuthentication])
    RecordingAuthentication.calls = 0

    plain = client.get(path)
    with_credentials = client.get(path, HTTP_AUTHORIZATION="Basic bm90OnZhbGlk")

    assert plain.status_code == with_credentials.status_code == 200
    assert plain["Content-Type"] == "application/json"
    assert RecordingAuthentication.calls == 0
