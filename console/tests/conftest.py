import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from django_ratelimit.core import _get_window

from analytics.periods import floor_time
from analytics.services import aggregation
from endpointstats.celery import app
from tracker import services as tracker_services

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """Celery's documented in-process test worker on the suite's real Redis broker (solo pool)."""
    from celery.contrib.testing.worker import start_worker

    heartbeat = os.environ.get("CELERY_HEARTBEAT_FILE")
    os.environ["CELERY_HEARTBEAT_FILE"] = str(tmp_path_factory.mktemp("worker") / "heartbeat")
    app.control.purge()  # messages left by earlier runs name runs that do not exist here
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING"):
            yield
    finally:
        if heartbeat is None:
            os.environ.pop("CELERY_HEARTBEAT_FILE", None)
        else:
            os.environ["CELERY_HEARTBEAT_FILE"] = heartbeat


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Login tests check many passwords; the production hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "a-long-password-1")


@pytest.fixture
def admin_client_(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def staff_client(client, django_user_model):
    """Staff that may view every model but not run operations."""
    user = django_user_model.objects.create_user("viewer", "viewer@example.com", "a-long-password-2", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client.force_login(user)
    return client


@dataclass
class Traffic:
    now: datetime
    hours: list[datetime]


@pytest.fixture
def traffic(make_event):
    """Known traffic in the two complete hours before the running one, aggregated as beat would."""
    now = timezone.now()
    # The pages read the clock themselves: traffic made in an hour's last seconds would sit in
    # other hours by the time a page is asked for, so wait for the next hour (at most 30 s).
    until_next_hour = (floor_time(now, HOUR) + HOUR - now).total_seconds()
    if until_next_hour < 30:
        time.sleep(until_next_hour + 0.5)
        now = timezone.now()
    first = floor_time(now, HOUR) - 2 * HOUR
    events = []
    for n in range(6):
        events.append(make_event(endpoint="/stats", occurred_at=first + timedelta(minutes=n), duration_ms=10.0 + n))
    events += [
        make_event(
            endpoint="/stats", occurred_at=first + timedelta(minutes=10), status_code=500, is_error=True, duration_ms=20
        ),
        make_event(endpoint="/stats", occurred_at=first + timedelta(minutes=11), status_code=429, duration_ms=0.5),
        make_event(endpoint="/stats", occurred_at=first + timedelta(minutes=12), status_code=429, duration_ms=0.5),
        make_event(endpoint="/stats", occurred_at=first + timedelta(minutes=13), status_code=404, duration_ms=3.0),
    ]
    for n in range(3):
        events.append(
            make_event(
                endpoint="/items/<int:pk>",
                occurred_at=first + HOUR + timedelta(minutes=n),
                duration_ms=1000.0 * (n + 1),
                client_ip="198.51.100.9",
            )
        )
    tracker_services.store_events(events)
    hours = [first, first + HOUR]
    for hour in hours:
        aggregation.aggregate_hour(hour=hour, now=now)
    return Traffic(now=now, hours=hours)


def far_from_window_end(candidates, *, seconds: int = 20, period: int = 60, key=str) -> str:
    """A candidate (address or username) whose django-ratelimit window has `seconds` left, so a
    test that expects one window never straddles two (window edges are staggered per key(value))."""
    now = int(time.time())
    return next(value for value in candidates if _get_window(key(value), period) - now >= seconds)


def park(payloads: list[bytes]) -> None:
    """Put payloads among the dead letters, as a drain does with events it cannot read."""
    from tracker import buffer

    for payload in payloads:
        buffer.connection().xadd(buffer.dead_letter_key(0), {buffer.FIELD: payload})
