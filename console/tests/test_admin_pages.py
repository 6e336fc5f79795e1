"""Every admin page opens for staff and sends anonymous users to the login; changelists built for size."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from analytics.models import HourlyStat
from console.models import TaskRun
from tracker import services
from tracker.models import AccessEvent, EndpointStat

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


def url(info: tuple[str, str], view: str) -> str:
    return f"admin:{info[0]}_{info[1]}_{view}"


def console_pages() -> list[str]:
    return [
        reverse("admin:index"),
        reverse("admin:index") + "?range=7d",
        reverse("admin:console_endpoint") + "?endpoint=/stats",
        reverse("admin:console_operations"),
    ]


def model_pages() -> list[str]:
    pages = []
    for model in admin.site._registry:
        info = (model._meta.app_label, str(model._meta.model_name))

        pages.append(reverse(url(info, "changelist")))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            pages.append(reverse(url(info, "change"), args=[first.pk]))
    return pages


def test_every_admin_page_answers_200_for_staff_and_sends_anonymous_users_to_the_login(
    client, staff_client, superuser, traffic
):
    TaskRun.objects.create(kind=TaskRun.Kind.DRAIN, requested_by=superuser)
    pages = console_pages() + model_pages()
    assert len(pages) >= 4 + 2 * 6

    for url in pages:
        assert staff_client.get(url).status_code == 200, url
    client.logout()
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url


@pytest.mark.parametrize("model", [AccessEvent, EndpointStat, HourlyStat, TaskRun])
def test_raw_events_counters_rollups_and_runs_cannot_be_added_changed_or_deleted(admin_client_, traffic, model):
    row = model._default_manager.first() or TaskRun.objects.create(kind=TaskRun.Kind.DRAIN)
    info = (model._meta.app_label, model._meta.model_name)
    before = model._default_manager.count()

    add = admin_client_.get(reverse(url(info, "add")))
    delete = admin_client_.post(reverse(url(info, "delete"), args=[row.pk]), {"post": "yes"})
    change = admin_client_.post(reverse(url(info, "change"), args=[row.pk]), {})
    bulk = admin_client_.post(
        reverse(url(info, "changelist")), {"action": "delete_selected", "_selected_action": [row.pk]}
    )
    page = admin_client_.get(reverse(url(info, "change"), args=[row.pk])).content.decode()

    assert (add.status_code, delete.status_code, change.status_code) == (403, 403, 403)
    assert bulk.status_code in {200, 302} and model._default_manager.count() == before  # no such action
    assert 'name="_save"' not in page and "deletelink" not in page
    assert "delete_selected" not in admin_client_.get(reverse(url(info, "changelist"))).content.decode()


def test_endpoint_stats_show_success_rate_and_average_latency(admin_client_, traffic):
    page = admin_client_.get(reverse("admin:tracker_endpointstat_changelist")).content.decode()

    # /stats: 10 requests, 1 server error, durations 10..15, 20, 0.5, 0.5 and 3 ms: 99 ms in all.
    assert '<td class="field-success_rate_display">90.0%</td>' in page
    assert '<td class="field-average_ms">9.9</td>' in page
    assert '<td class="field-average_ms">2,000.0</td>' in page


def test_rollups_are_newest_first_with_p95_rounded(admin_client_, traffic):
    response = admin_client_.get(reverse("admin:analytics_hourlystat_changelist"))
    page = response.content.decode()

    assert [row.hour for row in response.context["cl"].result_list] == traffic.hours[::-1]
    p95 = re.findall(r'<td class="field-p95_ms">([^<]+)</td>', page)
    assert p95 and all(re.fullmatch(r"[\d,]+\.\d", value) for value in p95), p95


def _events(make_event):
    services.store_events(
        [
            make_event(endpoint="/stats", occurred_at=T0, status_code=200, client_ip="203.0.113.7"),
            make_event(endpoint="/stats", occurred_at=T0 + timedelta(hours=1), status_code=429, method="POST"),
            make_event(endpoint="/items/<int:pk>", occurred_at=T0 + timedelta(days=1), status_code=503, is_error=True),
            make_event(endpoint="/items/<int:pk>", occurred_at=T0 + timedelta(days=2), status_code=404, country="DE"),
            make_event(endpoint="/", occurred_at=T0, status_code=302, client_ip="198.51.100.20", pod_name="web-1"),
        ]
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "2xx"}, 1),
        ({"status": "3xx"}, 1),
        ({"status": "4xx"}, 2),
        ({"status": "429"}, 1),
        ({"status": "5xx"}, 1),
        ({"method": "POST"}, 1),
        ({"endpoint": "/items/<int:pk>"}, 2),
        ({"pod": "web-1"}, 1),
        ({"country": "de"}, 1),
        ({"from": "2026-03-02"}, 2),
        ({"until": "2026-03-01"}, 3),
        ({"from": "2026-03-01T10:30", "until": "2026-03-02"}, 2),
        ({"q": "203.0.113.7"}, 4),  # make_event's default address
        ({"q": "198.51.100.0/24"}, 1),
        ({"q": "/ite"}, 2),
        ({"q": "/items/<int:pk>", "status": "5xx"}, 1),
    ],
)
def test_events_filter_by_date_endpoint_status_method_pod_country_and_search(
    admin_client_, make_event, query, expected
):
    _events(make_event)

    response = admin_client_.get(reverse("admin:tracker_accessevent_changelist"), query)

    assert response.status_code == 200
    assert response.context["cl"].result_count == expected


def test_filters_are_typed_not_listed_and_endpoint_names_are_completed(admin_client_, make_event):
    services.store_events([make_event(endpoint=f"/e{i}") for i in range(300)])

    page = admin_client_.get(reverse("admin:tracker_accessevent_changelist")).content.decode()

    assert 'type="search" id="filter-endpoint" name="endpoint"' in page
    assert '<datalist id="suggest-endpoint">' in page and '<option value="/e299">' in page
    assert "?endpoint=%2Fe299" not in page  # not one link per endpoint
    assert page.count('href="?status=') == 5 and 'href="?status=429"' in page


def test_a_bad_date_is_refused_without_an_error_page(admin_client_, make_event):
    _events(make_event)

    response = admin_client_.get(reverse("admin:tracker_accessevent_changelist"), {"from": "yesterday"})

    assert response.status_code == 302 and "e=1" in response["Location"]


def test_the_event_list_runs_a_fixed_number_of_queries_and_says_its_count_is_an_estimate(admin_client_, make_event):
    def measure() -> tuple[int, str]:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tracker_accessevent")
        with CaptureQueriesContext(connection) as captured:
            response = admin_client_.get(reverse("admin:tracker_accessevent_changelist"))
        assert response.status_code == 200
        assert not [q for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
        return len(captured.captured_queries), response.content.decode()

    services.store_events([make_event(occurred_at=T0 + timedelta(seconds=i)) for i in range(11_000)])
    few, _ = measure()
    services.store_events([make_event(occurred_at=T0 + timedelta(seconds=i), endpoint="/b") for i in range(50_000)])
    many, page = measure()

    assert many == few <= 12
    assert re.search(r"about 6\d,\d{3} access events \(estimate\)", page)


def test_a_filtered_count_beyond_the_cap_says_at_least(admin_client_, make_event, monkeypatch):
    from tracker import paginators

    monkeypatch.setattr(paginators, "COUNT_CAP", 100)
    services.store_events([make_event(occurred_at=T0 + timedelta(seconds=i)) for i in range(150)])

    page = admin_client_.get(reverse("admin:tracker_accessevent_changelist"), {"status": "2xx"}).content.decode()

    assert "at least 100 access events" in page
