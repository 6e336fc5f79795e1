"""Deciding after a cheap view: one Redis command counts, decides and buffers a tracked request."""

from collections import Counter

import orjson
import pytest

from ratelimit.queries import refusals_per_minute
from tracker import buffer, redis_direct
from tracker.events import Event
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """The names of the commands sent on the request path's held connection (the real ones, in order)."""
    names: list[str] = []
    real = redis_direct.command

    def command(client, *args):
        names.append(args[0])
        return real(client, *args)

    monkeypatch.setattr(redis_direct, "command", command)
    return names


def buffered_statuses(ip: str) -> Counter:
    events = [orjson.loads(payload) for payload in buffer.peek(limit_per_shard=1000)]
    return Counter(event["status_code"] for event in events if event["client_ip"] == ip)


def test_a_tracked_get_of_the_greeting_costs_one_redis_command_refused_or_not(
    client, settings, client_ip_far_from_window_end, sent
):
    settings.RATE_LIMITS = {"/": 2}
    ip = client_ip_far_from_window_end(60)
    client.get("/", REMOTE_ADDR="203.0.113.90")  # the server knows the script from here on
    sent.clear()
    refusals_before = sum(refusals_per_minute(minutes=2))

    statuses = [client.get("/", REMOTE_ADDR=ip).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    # Each request, the refused one too: one script (count, decide, buffer the event; for the refusal,
    # the 429's event and this minute's refusal count). No XADD of its own, no refusal pipeline.
    assert sent == ["EVALSHA", "EVALSHA", "EVALSHA"]
    assert buffered_statuses(ip) == {200: 2, 429: 1}
    assert sum(refusals_per_minute(minutes=2)) == refusals_before + 1


def test_the_refusals_event_is_the_served_one_with_the_status_of_a_429(client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/stats": 1}
    ip = client_ip_far_from_window_end(60)
    agent = 'probe "status_code":200,"is_error":true'  # the fields the script rewrites, in a string value

    statuses = [client.get("/stats", REMOTE_ADDR=ip, HTTP_USER_AGENT=agent).status_code for _ in range(2)]

    assert statuses == [200, 429]
    events = [Event.from_json(payload) for payload in buffer.peek(limit_per_shard=1000)]
    served, refused = sorted((e for e in events if e.client_ip == ip), key=lambda event: event.status_code or 0)
    assert (served.status_code, refused.status_code) == (200, 429)
    assert not refused.is_error
    assert refused.user_agent == served.user_agent == agent  # left alone
    assert (refused.endpoint, refused.method, refused.pod_name) == (served.endpoint, served.method, served.pod_name)
    assert refused.event_id != served.event_id


def test_in_shadow_mode_the_script_buffers_every_request(client, settings, client_ip_far_from_window_end, sent):
    settings.RATE_LIMITS = {"/stats": 1}
    settings.RATELIMIT_SHADOW = True
    ip = client_ip_far_from_window_end(60)
    client.get("/stats", REMOTE_ADDR="203.0.113.91")
    sent.clear()

    statuses = [client.get("/stats", REMOTE_ADDR=ip).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert sent == ["EVALSHA"] * 3
    assert buffered_statuses(ip) == {200: 3}


def test_other_views_are_refused_before_they_run(
    client, settings, client_ip_far_from_window_end, sent, django_assert_num_queries
):
    settings.RATE_LIMITS = {"/analytics/stats": 1}
    ip = client_ip_far_from_window_end(60)
    assert client.get("/analytics/stats", REMOTE_ADDR=ip).status_code == 200
    sent.clear()

    with django_assert_num_queries(0):  # the view, which reads rollups, never ran
        refused = client.get("/analytics/stats", REMOTE_ADDR=ip)

    assert refused.status_code == 429
    assert sent == ["EVALSHA", "XADD"]  # decided first, tracked after
    assert buffered_statuses(ip) == {200: 1, 429: 1}


def test_with_redis_down_the_greeting_is_served_and_its_event_stored_directly(client, settings, private_redis):
    settings.RATE_LIMITS = {"/": 1}
    private_redis.stop()

    response = client.get("/", REMOTE_ADDR="203.0.113.92")

    assert response.status_code == 200  # fail-open
    assert list(AccessEvent.objects.filter(client_ip="203.0.113.92").values_list("endpoint", "status_code")) == [
        ("/", 200)
    ]


def test_with_tracking_off_the_greeting_is_decided_before_it_runs(
    client, settings, client_ip_far_from_window_end, sent, monkeypatch
):
    from tracker import queries

    settings.TRACKING_ENABLED = False
    settings.RATE_LIMITS = {"/": 1}
    ip = client_ip_far_from_window_end(60)
    served = []
    real = queries.welcome_message
    monkeypatch.setattr(queries, "welcome_message", lambda: served.append(1) or real())

    statuses = [client.get("/", REMOTE_ADDR=ip).status_code for _ in range(2)]

    assert statuses == [200, 429]
    assert served == [1]  # the refused request never reached the view
    assert sent == ["EVALSHA", "EVALSHA"]  # no event: nothing buffered
