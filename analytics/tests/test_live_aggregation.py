"""Live aggregation advances the running hour from where it stopped and stays exact."""

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from django.db import connection

from analytics import queries, sketches
from analytics.models import AggregationWatermark, HourlyStat
from analytics.services import aggregation
from tracker.models import AccessEvent

CURRENT = datetime(2026, 3, 3, 12, tzinfo=UTC)
NOW = CURRENT + timedelta(minutes=20)
LAG = timedelta(seconds=30)


def _rows(hour: datetime) -> dict[str, tuple]:
    return {
        row.endpoint: (
            row.access_count,
            row.error_count,
            round(row.total_response_time_ms, 6),
            row.timed_count,
            row.last_accessed_at,
            sketches.merge_histograms([row.latency_histogram]).tolist(),
            bytes(row.client_sketch),
            row.country_counts,
            row.p95_response_time_ms,
        )
        for row in HourlyStat.objects.filter(hour=hour)
    }


def _one_pass(hour: datetime, until: datetime) -> dict[str, tuple]:
    return {
        name: (
            s.access_count,
            s.error_count,
            round(s.total_response_time_ms, 6),
            s.timed_count,
            s.last_accessed_at,
            s.histogram.tolist(),
            sketches.encode_sketch(s.sketch),
            s.countries,
            s.p95_response_time_ms,
        )
        for name, s in queries.summarize_events(start=hour, end=until).items()
    }


def _traffic(event, start: datetime, count: int, *, endpoint: str = "/items", step_seconds: int = 7) -> list:
    return [
        event(
            endpoint=endpoint,
            occurred_at=start + timedelta(seconds=step_seconds * i),
            duration_ms=1.0 + (i * 37) % 400,
            status_code=503 if i % 9 == 0 else 200,
            is_error=i % 9 == 0,
            client_ip=f"81.2.69.{i % 40}" if i % 3 else f"2001:db8::{i % 17:x}",
        )
        for i in range(count)
    ]


@pytest.mark.django_db
def test_runs_that_advance_the_running_hour_give_what_one_pass_over_it_gives(store, event, settings):
    settings.ANALYTICS_LIVE_LAG_SECONDS = 30
    store(*_traffic(event, CURRENT, 120), *_traffic(event, CURRENT, 30, endpoint="/other", step_seconds=31))
    aggregation.aggregate_live(now=NOW)
    store(
        *_traffic(event, CURRENT + timedelta(minutes=3), 40),  # late: timed before the rollup's cut
        *_traffic(event, NOW - timedelta(seconds=10), 25, step_seconds=2),  # around the old cut
        *_traffic(event, NOW + timedelta(seconds=5), 10, endpoint="/new"),  # an endpoint the hour did not have
    )

    aggregation.aggregate_live(now=NOW + timedelta(minutes=1))
    aggregation.aggregate_live(now=NOW + timedelta(minutes=2))
    aggregation.aggregate_live(now=NOW + timedelta(minutes=2))  # a re-run with nothing new changes nothing

    until = NOW + timedelta(minutes=2) - LAG
    assert _rows(CURRENT) == _one_pass(CURRENT, until)
    assert set(HourlyStat.objects.filter(hour=CURRENT).values_list("covered_until", "covered_event_id")) == {
        (until, AccessEvent.objects.order_by("-id").values_list("id", flat=True).first())
    }
    exact = queries.summarize_events(start=CURRENT, end=until)
    clients = dict(HourlyStat.objects.filter(hour=CURRENT).values_list("endpoint", "unique_clients"))
    # Merged parts of the running hour count clients with the sketch (exact again once complete).
    assert clients == {
        "/items": sketches.estimate_clients(exact["/items"].sketch),
        "/new": sketches.estimate_clients(exact["/new"].sketch),
        "/other": exact["/other"].unique_clients,  # nothing new since its exact first pass
    }
    assert clients["/items"] == pytest.approx(exact["/items"].unique_clients, rel=0.1)


@pytest.mark.django_db
def test_a_run_reads_from_its_watermark_not_from_the_start_of_the_hour(store, event):
    store(*_traffic(event, CURRENT, 5))
    aggregation.aggregate_live(now=NOW)
    # An event already in the rollup disappears behind its back: a run that re-read the hour would notice.
    AccessEvent.objects.filter(pk=AccessEvent.objects.order_by("id").values_list("id", flat=True).first()).delete()
    store(event(occurred_at=NOW - timedelta(minutes=1)))

    aggregation.aggregate_live(now=NOW + timedelta(minutes=1))

    assert HourlyStat.objects.get(hour=CURRENT).access_count == 6


@pytest.mark.django_db
def test_late_events_for_an_hour_aggregated_long_ago_are_picked_up_by_the_next_run(store, event, settings):
    settings.ANALYTICS_REAGGREGATE_HOURS = 3
    old = CURRENT - timedelta(hours=5)  # beyond what the hourly task aggregates again
    store(event(occurred_at=old + timedelta(minutes=1), client_ip="81.2.69.1"))
    aggregation.aggregate_hour(hour=old, now=NOW)
    aggregation.aggregate_live(now=NOW)

    store(event(occurred_at=old + timedelta(minutes=2), client_ip="81.2.69.2", is_error=True, status_code=500))
    aggregation.aggregate_live(now=NOW + timedelta(minutes=1))

    row = HourlyStat.objects.get(hour=old)
    assert (row.access_count, row.error_count, row.unique_clients) == (2, 1, 2)
    assert row.covered_until == old + timedelta(hours=1)
    [stats] = queries.endpoint_stats(period="7d", now=NOW + timedelta(minutes=1))
    assert stats.access_count == 2


@pytest.mark.django_db
def test_the_previous_hour_is_completed_once_exactly_when_the_next_one_starts(store, event):
    store(*_traffic(event, CURRENT, 200, step_seconds=17))
    aggregation.aggregate_live(now=NOW)
    aggregation.aggregate_live(now=NOW + timedelta(minutes=1))

    aggregation.aggregate_live(now=CURRENT + timedelta(hours=1, seconds=40))

    row = HourlyStat.objects.get(hour=CURRENT)
    assert (row.covered_until, row.covered_event_id) == (CURRENT + timedelta(hours=1), None)
    assert _rows(CURRENT) == _one_pass(CURRENT, CURRENT + timedelta(hours=1))
    assert (
        row.unique_clients
        == queries.summarize_events(start=CURRENT, end=CURRENT + timedelta(hours=1))["/items"].unique_clients
    )  # exact


def _open_transaction_storing(occurred_at: datetime):
    """Another connection that stores one event and keeps its transaction open (a drain mid-batch)."""
    settings = connection.settings_dict
    other = psycopg2.connect(
        dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"], port=settings["PORT"] or 5432
    )
    with other.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tracker_accessevent (event_id, endpoint, method, is_error, user_agent, pod_name, country,"
            " occurred_at) VALUES (gen_random_uuid(), '/items', 'GET', false, '', '', '', %s)",
            [occurred_at],
        )
    return other


@pytest.mark.django_db(transaction=True)
def test_a_run_never_skips_an_event_a_transaction_still_running_will_commit_below_its_watermark(store, event):
    first = _open_transaction_storing(CURRENT + timedelta(minutes=1))  # takes an id, not committed yet
    second = None
    try:
        store(event(occurred_at=CURRENT + timedelta(minutes=2)))  # a larger id, committed

        aggregation.aggregate_live(now=NOW)  # the first transaction could still commit a smaller id: wait
        assert not HourlyStat.objects.filter(hour=CURRENT).exists()
        assert AggregationWatermark.objects.get().pending_event_id is not None

        second = _open_transaction_storing(CURRENT + timedelta(minutes=3))
        first.commit()
        aggregation.aggregate_live(now=NOW + timedelta(minutes=1))  # up to the position the last run saw
        assert HourlyStat.objects.get(hour=CURRENT).access_count == 2

        second.commit()
        aggregation.aggregate_live(now=NOW + timedelta(minutes=2))
        assert HourlyStat.objects.get(hour=CURRENT).access_count == 3
        aggregation.aggregate_live(now=NOW + timedelta(minutes=3))
        assert HourlyStat.objects.get(hour=CURRENT).access_count == 3
    finally:
        for other in (first, second):
            if other is not None:
                other.rollback()
                other.close()
