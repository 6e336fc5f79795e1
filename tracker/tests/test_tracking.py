"""What the middleware records for each request the web role serves."""

import pytest
from rest_framework.test import APIClient

from tracker import services
from tracker.models import AccessEvent, EndpointStat

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tracker.tests.urls")]


@pytest.fixture
def client():
    return APIClient(raise_request_exception=False)


@pytest.mark.contract
def test_requests_to_one_route_are_one_endpoint(client, drain):
    for pk in (1, 2, 3, 9999):
        assert client.get(f"/items/{pk}").status_code == 200
    drain()

    assert list(EndpointStat.objects.values_list("endpoint", "access_count")) == [("/items/<int:pk>", 4)]


@pytest.mark.contract
def test_paths_that_match_no_route_share_one_endpoint(client, drain):
    for path in ("/a", "/b/c", "/items/not-a-number", "/%00weird"):
        assert client.get(path).status_code == 404
    drain()

    assert list(EndpointStat.objects.values_list("endpoint", "access_count")) == [("<unmatched>", 4)]


def test_the_recorded_response_time_is_the_real_duration(client):
    client.get("/slow")  # sleeps 50 ms
    services.drain_buffer()

    event = AccessEvent.objects.get(endpoint="/slow")
    assert event.duration_ms >= 50.0
    assert EndpointStat.objects.get(endpoint="/slow").last_response_time_ms == event.duration_ms


def test_each_event_carries_method_status_client_agent_and_pod(client, settings):
    client.post("/items/5", HTTP_USER_AGENT="x" * 1000, REMOTE_ADDR="198.51.100.23")
    services.drain_buffer()

    event = AccessEvent.objects.get()
    assert (event.endpoint, event.method, event.status_code, event.is_error) == ("/items/<int:pk>", "POST", 200, False)
    assert event.client_ip == "198.51.100.23"
    assert event.user_agent == "x" * settings.TRACKING_USER_AGENT_MAX_LENGTH
    assert event.pod_name == settings.POD_NAME


def test_a_server_error_is_served_as_json_and_counted_as_an_error(client):
    response = client.get("/broken")
    services.drain_buffer()

    assert response.status_code == 500
    assert response.json()["error"] == "Internal server error"
    assert "Traceback" not in response.content.decode()
    stat = EndpointStat.objects.get(endpoint="/broken")
    assert (stat.access_count, stat.error_count, stat.success_rate) == (1, 1, 0.0)


def test_a_client_cannot_pick_its_address_with_x_forwarded_for(client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # The ingress appends the address it saw (203.0.113.9); the client forged the first entry.
    client.get("/items/1", HTTP_X_FORWARDED_FOR="10.0.0.1, 203.0.113.9", REMOTE_ADDR="10.1.1.1")
    settings.TRUSTED_PROXY_COUNT = 0
    client.get("/items/1", HTTP_X_FORWARDED_FOR="10.0.0.1", REMOTE_ADDR="198.51.100.4")
    services.drain_buffer()

    assert sorted(AccessEvent.objects.values_list("client_ip", flat=True)) == ["198.51.100.4", "203.0.113.9"]


def test_tracking_can_be_switched_off(client, settings):
    settings.TRACKING_ENABLED = False
    client.get("/items/1")

    assert services.drain_buffer().claimed == 0
