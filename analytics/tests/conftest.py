from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from analytics import services
from tracker import services as tracker_services
from tracker.events import Event


@pytest.fixture
def store():
    """Store events through the real pipeline's write path (geo + privacy + COPY insert)."""

    def save(*events: Event) -> int:
        return tracker_services.store_events(list(events))

    return save


@pytest.fixture
def event():
    def build(**fields) -> Event:
        defaults = {
            "endpoint": "/items",
            "occurred_at": datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
            "method": "GET",
            "status_code": 200,
            "duration_ms": 10.0,
            "client_ip": "81.2.69.160",
        }
        return Event(**(defaults | fields))

    return build


@pytest.fixture
def api_token(db) -> str:
    _, token = services.create_token(name="billing-service")
    return token


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def authed(client, api_token) -> APIClient:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}")
    return client
