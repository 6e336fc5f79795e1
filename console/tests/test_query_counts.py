"""The list endpoints and the admin pages run as many queries for many rows as for one: no query per
row (an N+1) hides behind a page that is fast on a test's handful of rows."""

import uuid
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics.periods import floor_time
from analytics.services import aggregation, tokens
from console.models import TaskRun
from tracker import services as tracker_services

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
LIST_ENDPOINTS = [
    ("/stats", {}),
    ("/analytics/stats", {"period": "24h"}),
    ("/analytics/stats", {"period": "7d"}),
    ("/analytics/stats", {"period": "1h"}),
    ("/analytics/geo", {"period": "24h"}),
    ("/analytics/timeseries", {"period": "24h", "interval": "1h"}),
    ("/analytics/timeseries", {"period": "7d", "interval": "1d"}),
]


def fresh_cache(settings) -> None:
    """A new key prefix (under the test's own, so its teardown deletes the keys): every measurement
    reads the database as a cold cache would, never the previous measurement's cached answer."""
    caches = {alias: dict(config) for alias, config in settings.CACHES.items()}
    base = caches["default"]["KEY_PREFIX"].split(":q-")[0]
    caches["default"]["KEY_PREFIX"] = f"{base}:q-{uuid.uuid4().hex[:8]}"
    settings.CACHES = caches


def add_rows(first: int, last: int, *, make_event, user) -> None:
    """Endpoints first..last-1, each with raw events in the two hours before the running one (so
    rollups and raw events both answer), their hourly/daily/geo rollups, a token, a run, a user, a group."""
    now = timezone.now()
    hours = [floor_time(now, HOUR) - 2 * HOUR, floor_time(now, HOUR) - HOUR]
    events = []
    for n in range(first, last):
        for hour in hours:
            events += [
                make_event(
                    endpoint=f"/e{n}", occurred_at=hour + timedelta(minutes=m), client_ip=f"81.2.69.{m + n % 50}"
                )
                for m in range(3)
            ]
        events.append(make_event(endpoint=f"/e{n}", occurred_at=now - timedelta(minutes=2), status_code=500))
        tokens.create_token(name=f"svc-{n}")
        TaskRun.objects.create(kind=TaskRun.Kind.DRAIN, requested_by=user)
        type(user).objects.create_user(f"user-{n}", f"user-{n}@example.com", "a-long-password-3")
        Group.objects.create(name=f"group-{n}")
    tracker_services.store_events(events)
    for hour in hours:
        aggregation.aggregate_hour(hour=hour, now=now)


def count_queries(settings, client, url: str, params: dict | None = None) -> int:
    """Queries of a cold-cache request, after one warm-up request (per-process caches such as
    ContentType's fill on first use, whatever the number of rows)."""
    client.get(url, params or {})
    fresh_cache(settings)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == 200, (url, response.status_code)
    return len(captured.captured_queries)


def admin_pages() -> dict[str, str]:
    pages = {
        "overview": reverse("admin:index"),
        "overview 7d": reverse("admin:index") + "?range=7d",
        "endpoint": reverse("admin:console_endpoint") + "?endpoint=/e0",
        "operations": reverse("admin:console_operations"),
    }
    for model in admin.site._registry:
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages[f"{model._meta.label} list"] = reverse(f"{info}_changelist")
        first = model._default_manager.order_by("pk").first()  # rollups are rebuilt: its pk may change
        assert first is not None, model
        pages[f"{model._meta.label} change"] = reverse(f"{info}_change", args=[first.pk])
    return pages


def test_list_endpoints_run_as_many_queries_for_many_rows_as_for_one(client, settings, make_event, django_user_model):
    user = django_user_model.objects.create_user("owner", "owner@example.com", "a-long-password-4")
    add_rows(0, 1, make_event=make_event, user=user)

    def measure() -> dict:
        counts = {}
        for url, params in LIST_ENDPOINTS:
            counts[url, tuple(params.items())] = count_queries(settings, client, url, params)
        return counts

    one = measure()
    add_rows(1, 30, make_event=make_event, user=user)
    many = measure()

    assert len(client.get("/stats").json()["endpoints"]) == 30  # the rows are really there
    assert many == one


def test_admin_changelists_change_pages_and_console_pages_run_as_many_queries_for_many_rows_as_for_one(
    admin_client_, superuser, settings, make_event
):
    add_rows(0, 1, make_event=make_event, user=superuser)

    def measure() -> dict:
        return {name: count_queries(settings, admin_client_, url) for name, url in admin_pages().items()}

    one = measure()
    add_rows(1, 30, make_event=make_event, user=superuser)
    many = measure()

    assert len(many) == 4 + 2 * len(admin.site._registry)
    assert many == one
