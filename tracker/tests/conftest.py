from datetime import UTC, datetime

import pytest

from tracker.events import Event


@pytest.fixture
def make_event():
    """Build an Event with sensible defaults; override any field by keyword."""

    def build(**fields) -> Event:
        defaults = {
            "endpoint": "/",
            "occurred_at": datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
            "method": "GET",
            "status_code": 200,
            "duration_ms": 1.5,
            "client_ip": "203.0.113.7",
            "user_agent": "pytest",
            "pod_name": "web-0",
        }
        return Event(**(defaults | fields))

    return build
