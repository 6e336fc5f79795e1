import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.models import ApiToken
from analytics.services import tokens
from tracker import buffer
from tracker import services as tracker_services
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db


def _post(client, body, **extra):
    return client.post("/collect", data=json.dumps(body), content_type="application/json", **extra)


def _queued() -> int:
    """Collected events waiting in the buffer (the middleware also buffers the /collect request itself)."""
    return sum(1 for payload in buffer.peek(1000) if json.loads(payload)["endpoint"] != "/collect")


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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The body is not valid JSON: send an event object or a list of them."),
        (b"42", "Send an event object or a non-empty list of them."),
        (b"[]", "Send an event object or a non-empty list of them."),
    ],
)
def test_a_body_that_is_not_events_is_a_400_that_says_what_to_send(authed, body, message):
    response = authed.post("/collect", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"error": "Bad request", "message": message}
    assert _queued() == 0


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
    tokens.revoke_tokens(ids=[row.pk], now=timezone.now())
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


@pytest.mark.parametrize(
    "body",
    [
        "[" * 1000 + "]" * 1000,
        '{"endpoint": ' + "[" * 1000 + "]" * 1000 + ', "timestamp": "2026-01-01T00:00Z"}',
        '{"a": ' * 1000 + "1" + "}" * 1000,
    ],
)
def test_json_nested_a_thousand_deep_is_a_400_not_a_500(authed, body):
    response = authed.post("/collect", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] in {"Bad request", "Invalid request"}
    assert _queued() == 0


@pytest.mark.parametrize(
    ("age", "problem"),
    [
        (timedelta(days=31), "Is older than the retention (30 days): such events are not kept."),
        (timedelta(days=365 * 126), "Is older than the retention (30 days): such events are not kept."),
        (-timedelta(minutes=6), "Is in the future; send the time the request was served (UTC)."),
    ],
)
def test_timestamps_older_than_the_retention_or_ahead_of_the_clock_are_refused(authed, settings, age, problem):
    settings.ANALYTICS_RETENTION_DAYS = 30
    response = _post(authed, {"endpoint": "/a", "timestamp": (timezone.now() - age).isoformat()})

    assert response.status_code == 400
    assert response.json()["details"]["0"]["timestamp"] == [problem]
    assert _queued() == 0


def test_timestamps_within_the_retention_and_a_little_ahead_are_accepted(authed):
    now = timezone.now()
    body = [
        {"endpoint": "/a", "timestamp": (now + delta).isoformat()}
        for delta in (timedelta(days=-29), timedelta(minutes=4))
    ]

    assert _post(authed, body).status_code == 201


@pytest.mark.parametrize(
    "endpoint",
    [
        "/\x1b[2J\x1b[31mowned",  # terminal escape sequences
        "/a'; DROP TABLE tracker_endpointstat; --",
        "/with space",
        "/tab\there",
        "/line\n",
        '/quote"',
        "/back\\slash",
        "/" + "a" * 200,
        "stats",
        "<other>",
        0,
        "",
        {},  # was a 500: the message's braces went through str.format
        ["/a"],
    ],
)
def test_endpoint_names_outside_the_documented_characters_are_refused(authed, endpoint):
    response = _post(authed, {"endpoint": endpoint, "timestamp": timezone.now().isoformat()})

    assert response.status_code == 400
    assert list(response.json()["details"]["0"]) == ["endpoint"]
    assert _queued() == 0


def test_route_templates_and_encoded_paths_are_valid_endpoint_names(authed):
    names = ["/items/<int:pk>", "/orders/{id}/lines", "/search;v=2", "/caf%C3%A9", "/a-b_c.d~e!$&()*+,=:@"]
    response = _post(authed, [{"endpoint": name, "timestamp": timezone.now().isoformat()} for name in names])

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "endpoint=/a&timestamp=2026-01-01T00:00Z"),
        (
            "multipart/form-data; boundary=x",
            '--x\r\nContent-Disposition: form-data; name="endpoint"\r\n\r\n/a\r\n--x--\r\n',
        ),
        ("text/plain", '{"endpoint": "/a"}'),
    ],
)
def test_collect_takes_json_only_and_says_so_with_a_415(authed, content_type, body):
    response = authed.post("/collect", data=body, content_type=content_type)

    assert response.status_code == 415
    assert response.json() == {
        "error": "Unsupported media type",
        "message": f"Send JSON (Content-Type: application/json), not {content_type.split(';')[0]}.",
    }
    assert _queued() == 0


def test_one_token_cannot_introduce_more_new_endpoint_names_than_its_quota(authed, client, settings, store, make_event):
    settings.ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN = 3
    store(make_event(endpoint="/known"))  # has counters already: never counts against a quota
    now = timezone.now().isoformat()

    def send(*names):
        return _post(authed, [{"endpoint": name, "timestamp": now} for name in names])

    assert send("/n1", "/n2", "/known").status_code == 201
    assert send("/n1", "/n2", "/n3").status_code == 201  # /n1 and /n2 were counted once already
    refused = send("/n1", "/n4", "/known")
    queued_before = _queued()

    assert refused.status_code == 429
    assert refused.json()["error"] == "New endpoint quota exceeded"
    assert "introduced 3 new endpoint name(s) and this request adds 1" in refused.json()["message"]
    assert send("/n1", "/n3", "/known").status_code == 201
    assert _queued() == queued_before + 3
    _, other_token = tokens.create_token(name="another service")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other_token}")
    assert _post(client, {"endpoint": "/n4", "timestamp": now}).status_code == 201  # the quota is per token


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("is_error", 0, "boolean"),
        ("response_time", "1.5", "number"),
        ("user_agent", 7, "string"),
        ("response_time", True, "number"),
    ],
)
def test_fields_take_the_json_types_the_schema_states(authed, field, value, kind):
    response = _post(authed, {"endpoint": "/a", "timestamp": timezone.now().isoformat(), field: value})

    assert response.status_code == 400
    assert response.json()["details"]["0"] == {field: [f"Must be a JSON {kind}."]}
