"""The overview and drill-down: what they show, and that they never read raw events."""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics import backups
from analytics.periods import floor_time
from analytics.services import aggregation
from console import queries
from console.tests.conftest import far_from_window_end, park
from ratelimit import services as ratelimit_services
from tracker import services
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def test_the_admin_index_is_the_overview_with_the_models_below(admin_client_, traffic):
    response = admin_client_.get(reverse("admin:index"))

    assert response.status_code == 200
    page = text(response)
    assert "<h1>Overview</h1>" in page
    for chart in ("chart-requests", "chart-errors", "chart-refusals"):
        assert f'<canvas id="{chart}" role="img" aria-label="' in page
        assert f'id="{chart}-data" type="application/json"' in page
    assert "console/vendor/chartjs/chart.umd.js" in page  # served by the app itself, no CDN
    assert "cdn" not in page.lower()
    assert reverse("admin:tracker_accessevent_changelist") in page  # the model list is still there
    assert 'href="' + reverse("admin:console_operations") in page


def test_the_overview_totals_errors_and_refusals_come_from_the_rollups(admin_client_, traffic):
    data = queries.overview(range_key="24h", now=traffic.now)  # the moment the traffic was made for

    assert (data.totals.requests, data.totals.server_errors) == (13, 1)
    assert (data.totals.client_errors, data.totals.throttled) == (3, 2)
    assert [row.endpoint for row in data.top_endpoints] == ["/stats", "/items/<int:pk>"]
    assert data.slowest[0].endpoint == "/items/<int:pk>"
    assert data.slowest[0].p95_ms == pytest.approx(3000, rel=0.015)
    assert data.top_clients[0].address == "203.0.113.7" and data.top_clients[0].requests == 10
    assert data.top_clients[1].address == "198.51.100.9" and data.top_clients[1].requests == 3
    assert sum(point.throttled for point in data.series) == 2
    assert data.freshness.last_aggregation_at == traffic.hours[-1] + HOUR


def test_numbers_are_rounded_for_people(admin_client_, traffic):
    page = text(admin_client_.get(reverse("admin:index")))

    # p95 of /items (3 requests of 1, 2 and 3 s) is 3000 ms within 1.5%: one decimal, thousands separated.
    assert re.search(r"<td class=\"num\">[23],\d{3}\.\d</td>", page)
    cells = re.findall(r'<td class="num">([^<]*)</td>', page)
    assert cells and all(re.fullmatch(r"-|\d{1,3}(,\d{3})*(\.\d)?(%| ms)?", cell) for cell in cells), cells


def test_the_time_range_switch_changes_the_period(admin_client_, traffic):
    hour_page = text(admin_client_.get(reverse("admin:index") + "?range=1h"))
    week_page = text(admin_client_.get(reverse("admin:index") + "?range=7d"))
    bad_page = admin_client_.get(reverse("admin:index") + "?range=nonsense")

    # 1h starts at the hour that contains now - 1h, which is after the first traffic hour.
    assert 'href="?range=1h" aria-current="page"' in hour_page
    assert "Requests (1h)" in hour_page and "Requests (7d)" in week_page
    week = queries.overview(range_key="7d", now=traffic.now)
    assert week.totals.requests == 13 and len(week.series) == 7 * 24 + 1
    assert bad_page.status_code == 200 and "Requests (24h)" in text(bad_page)


def test_drill_down_shows_one_endpoints_traffic_p95_errors_and_clients(admin_client_, traffic):
    response = admin_client_.get(reverse("admin:console_endpoint"), {"endpoint": "/stats", "range": "24h"})

    page = text(response)
    assert response.status_code == 200
    assert "Endpoint /stats" in page
    detail = response.context["detail"]
    assert (detail.totals.requests, detail.totals.server_errors, detail.totals.throttled) == (10, 1, 2)
    assert detail.totals.p95_ms == pytest.approx(20.0, rel=0.015)
    assert detail.unique_clients == 1 and detail.top_clients[0].address == "203.0.113.7"
    assert 'canvas id="chart-latency"' in page
    overview = text(admin_client_.get(reverse("admin:index")))
    assert reverse("admin:console_endpoint") + "?endpoint=/stats&amp;range=24h" in overview


def test_buffer_dead_letters_backup_and_rules_in_force_are_shown(admin_client_, traffic, settings, make_event):
    settings.RATE_LIMITS = {"/stats": "60/m", "/search": {"rate": "100/m", "burst": "20/10s"}}
    services.record_events([make_event(occurred_at=timezone.now() - timedelta(seconds=90))])
    park([b"not json"])
    cache.set(backups.LAST_SUCCESS_KEY, (timezone.now() - timedelta(hours=3)).timestamp(), None)

    response = admin_client_.get(reverse("admin:index"))

    data = response.context["overview"]
    assert (data.buffer.queued, data.buffer.dead) == (1, 1)
    assert 0 <= data.buffer.drain_lag_seconds < 600
    page = text(response)
    assert "1 dead letter" in page
    assert "3 hours ago" in page  # last backup, with its age
    assert '<th scope="row">/search</th><td>100/m</td><td>20/10s</td>' in page
    assert '<th scope="row">default</th><td>120/m</td>' in page


def test_refusals_now_are_counted_per_minute_in_redis(admin_client_, settings, client):
    settings.RATELIMIT_SHADOW = False
    settings.RATE_LIMITS = {"/stats": 1}
    address = far_from_window_end((f"192.0.2.{n}" for n in range(1, 255)), key=ratelimit_services.client_key)
    statuses = [client.get("/stats", REMOTE_ADDR=address).status_code for _ in range(4)]

    data = queries.overview(range_key="1h", now=timezone.now())

    assert statuses.count(429) == 3
    assert sum(data.refusals_per_minute) == 3


def _many_events(make_event, *, count: int, hours: list) -> None:
    per_hour = count // len(hours)
    for hour in hours:
        services.store_events(
            [
                make_event(
                    endpoint=f"/e{i % 40}",
                    occurred_at=hour + timedelta(milliseconds=i * 50),
                    status_code=(200, 404, 429, 500)[i % 4],
                    is_error=i % 4 == 3,
                    duration_ms=float(i % 997),
                    client_ip=f"10.0.{i % 50}.{i % 200}",
                )
                for i in range(per_hour)
            ]
        )


def test_the_overview_runs_a_fixed_number_of_queries_whatever_the_number_of_events(admin_client_, make_event):
    now = timezone.now()
    hours = [floor_time(now, HOUR) - n * HOUR for n in range(4, 0, -1)]

    def measure():
        for hour in hours:
            aggregation.aggregate_hour(hour=hour, now=now)
        cache.delete_pattern("*console:p95*")
        with CaptureQueriesContext(connection) as captured:
            response = admin_client_.get(reverse("admin:index"))
        assert response.status_code == 200
        return [q["sql"] for q in captured.captured_queries]

    _many_events(make_event, count=400, hours=hours)
    few = measure()
    _many_events(make_event, count=50_000, hours=hours)
    many = measure()

    assert AccessEvent.objects.count() == 50_400
    assert len(many) == len(few) <= 10
    assert not [sql for sql in many if "tracker_accessevent" in sql]  # never the raw table
    assert response_requests(admin_client_) == 50_400


def response_requests(client) -> int:
    return client.get(reverse("admin:index")).context["overview"].totals.requests
