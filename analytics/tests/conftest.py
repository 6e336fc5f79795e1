import pytest
from rest_framework.test import APIClient

from analytics.services import tokens
from tracker import services as tracker_services
from tracker.events import Event


@pytest.fixture
def store():
    """Store events through the real pipeline's write path (geo + privacy + COPY insert)."""

    def save(*events: Event) -> int:
        return tracker_services.store_events(list(events))

    return save


@pytest.fixture
def event(make_event):
    """make_event with analytics' defaults: a public address (it has a country) and 10 ms."""

    def build(**fields) -> Event:
        defaults = {
            "endpoint": "/items",
            "duration_ms": 10.0,
            "client_ip": "81.2.69.160",
            "user_agent": "",
            "pod_name": "",
        }
        return make_event(**(defaults | fields))

    return build


@pytest.fixture
def api_token(db) -> str:
    _, token = tokens.create_token(name="billing-service")
    return token


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def authed(client, api_token) -> APIClient:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}")
    return client
