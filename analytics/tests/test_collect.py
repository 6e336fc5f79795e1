import hashlib
import json

import pytest
from django.utils import timezone

from analytics import services
from analytics.models import ApiToken
from tracker import buffer
from tracker import services as tracker_services
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db


def _post(client, body, **extra):
    return client.post("/collect", data=json.dumps(body), content_type="application/json", **extra)


def _queued() -> int:
    """Collected events waiting in the buffer (the middleware also buffers the /collect request itself)."""
    payloads = buffer.connection().lrange(buffer.queue_key(), 0, -1)
    return sum(1 for p in payloads if json.loads(p)["endpoint"] != "/collect")


def test_one_event_is_accepted_buffered_and_drained_like_a_tracked_request(authed):
    now = timezone.now().replace(microsecond=0)
    response = _post(
        authed,
        {
            "endpoint": "/orders",
            "timestamp": now.isoformat(),
            "response_time": 0.25,
            "client_ip": "81.2.69.160",
            "user_agent": "billing/1.0",
            "pod_name": "billing-0",
            "is_error": True,
        },
    )

    assert response.status_code == 201
    assert response.json() == {"status": "success", "accepted": 1}
    assert _queued() == 1
    tracker_services.drain_buffer()
    stored = AccessEvent.objects.get(endpoint="/orders")
    assert (stored.occurred_at, stored.duration_ms, stored.is_error, stored.client_ip, stored.country) == (
        now,
        250.0,
        True,
        "81.2.69.160",
        "GB",
    )
    assert (stored.user_agent, stored.pod_name) == ("billing/1.0", "billing-0")


def test_a_list_is_accepted_whole(authed):
    now = timezone.now().isoformat()
    response = _post(authed, [{"endpoint": f"/e{i}", "timestamp": now} for i in range(25)])

    assert response.status_code == 201
    assert response.json() == {"status": "success", "accepted": 25}
    assert _queued() == 25


def test_each_bad_item_and_field_is_named_and_nothing_is_accepted(authed):
    now = timezone.now().isoformat()
    body = [
        {"endpoint": "/ok", "timestamp": now},
        {"timestamp": now},
        {"endpoint": "/x", "timestamp": "yesterday", "response_time": -1, "client_ip": "999.1.1.1"},
        "not an object",
    ]
    response = _post(authed, body)

    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "Invalid request"
    assert set(data["details"]) == {"1", "2", "3"}
    assert set(data["details"]["1"]) == {"endpoint"}
    assert set(data["details"]["2"]) == {"timestamp", "response_time", "client_ip"}
    assert _queued() == 0


def test_more_events_than_the_maximum_is_a_400(authed, settings):
    settings.ANALYTICS_COLLECT_MAX_EVENTS = 3
    now = timezone.now().isoformat()
    response = _post(authed, [{"endpoint": "/a", "timestamp": now}] * 4)

    assert response.status_code == 400
    assert "At most 3 events" in response.json()["details"]["events"][0]
    assert _queued() == 0


def test_a_body_over_the_size_limit_is_a_413_in_json(authed, settings):
    settings.ANALYTICS_COLLECT_MAX_BYTES = 200
    now = timezone.now().isoformat()
    response = _post(authed, [{"endpoint": "/a" * 20, "timestamp": now}] * 5)

    assert response.status_code == 413
    assert response.json()["error"] == "Payload too large"
    assert "200 bytes" in response.json()["message"]
    assert _queued() == 0


@pytest.mark.parametrize("body", [b"{not json", b"42", b"[]"])
def test_a_body_that_is_not_events_is_a_400(authed, body):
    response = authed.post("/collect", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["message"]


def test_without_a_token_it_is_a_401(client):
    response = _post(client, {"endpoint": "/a", "timestamp": timezone.now().isoformat()})

    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"
    assert response["WWW-Authenticate"] == "Bearer"
    assert _queued() == 0


@pytest.mark.parametrize("header", ["Bearer es_wrong", "Basic abc", "Bearer"])
def test_a_wrong_token_is_a_401(client, api_token, header):
    response = _post(client, {"endpoint": "/a", "timestamp": "2026-01-01T00:00Z"}, HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert _queued() == 0


def test_a_revoked_token_is_refused(client, api_token):
    row = ApiToken.objects.get()
    services.revoke_tokens(ids=[row.pk])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}")

    response = _post(client, {"endpoint": "/a", "timestamp": timezone.now().isoformat()})

    assert response.status_code == 401
    assert "revoked" in response.json()["message"]


def test_tokens_are_stored_only_as_a_hash(api_token):
    row = ApiToken.objects.get()

    assert row.token_hash == hashlib.sha256(api_token.encode()).hexdigest()
    assert api_token not in {row.name, row.prefix, row.token_hash}
    assert api_token.startswith(row.prefix)


def test_the_admin_shows_a_new_token_once_and_revokes(admin_client):
    created = admin_client.post("/admin/analytics/apitoken/add/", {"name": "grafana"})
    response = admin_client.get(created["Location"])

    # The token travels in the page only: messages live in the session, never in a cookie.
    assert created.status_code == 302 and "messages" not in created.cookies
    shown = [str(m) for m in response.context["messages"]]
    token = shown[0].split("The new API token is ")[1].split(" ")[0]
    row = ApiToken.objects.get(name="grafana")
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    admin_client.post("/admin/analytics/apitoken/", {"action": "revoke", "_selected_action": [row.pk]}, follow=True)
    row.refresh_from_db()
    assert row.revoked_at is not None
