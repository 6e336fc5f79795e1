import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from analytics import queries
from analytics.models import DailyStat, GeoStat, HourlyStat
from analytics.services import aggregation
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db
HOUR = datetime(2026, 3, 1, 10, tzinfo=UTC)
NOW = datetime(2026, 3, 3, 12, 30, tzinfo=UTC)


def _rows(model):
    fields = [f.name for f in model._meta.concrete_fields if f.name != "id"]
    return sorted(
        tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in model.objects.values_list(*fields)
    )


@pytest.mark.contract
def test_an_hour_becomes_one_row_per_endpoint_with_exact_figures(store, event):
    store(
        event(endpoint="/a", occurred_at=HOUR, duration_ms=10.0, client_ip="81.2.69.160"),
        event(endpoint="/a", occurred_at=HOUR + timedelta(minutes=59), duration_ms=30.0, client_ip="8.8.8.8"),
        event(endpoint="/a", occurred_at=HOUR + timedelta(minutes=5), duration_ms=20.0, is_error=True),
        event(endpoint="/b", occurred_at=HOUR + timedelta(minutes=1), duration_ms=None, client_ip="10.0.0.1"),
        event(endpoint="/a", occurred_at=HOUR + timedelta(hours=1)),  # the next hour
    )

    assert aggregation.aggregate_hour(hour=HOUR, now=NOW) == 2

    a = HourlyStat.objects.get(endpoint="/a", hour=HOUR)
    assert (a.access_count, a.error_count, a.avg_response_time_ms, a.unique_clients) == (3, 1, 20.0, 2)
    assert a.last_accessed_at == HOUR + timedelta(minutes=59)
    assert a.country_counts == {"GB": 2, "US": 1}
    b = HourlyStat.objects.get(endpoint="/b", hour=HOUR)
    assert (b.access_count, b.avg_response_time_ms, b.p95_response_time_ms, b.country_counts) == (
        1,
        None,
        None,
        {"": 1},
    )
    day = DailyStat.objects.get(endpoint="/a", day=HOUR.date())
    assert (day.access_count, day.error_count) == (3, 1)
    assert set(GeoStat.objects.values_list("endpoint", "country", "access_count")) == {
        ("/a", "GB", 2),
        ("/a", "US", 1),
        ("/b", "", 1),
    }


@pytest.mark.contract
def test_aggregating_an_hour_twice_gives_the_same_rows(store, event):
    store(*[event(endpoint=f"/e{i % 3}", occurred_at=HOUR + timedelta(seconds=i), duration_ms=i) for i in range(60)])

    aggregation.aggregate_hour(hour=HOUR, now=NOW)
    first = (_rows(HourlyStat), _rows(DailyStat), _rows(GeoStat))
    aggregation.aggregate_hour(hour=HOUR, now=NOW)  # a beat retry, or a backfill over it

    assert (_rows(HourlyStat), _rows(DailyStat), _rows(GeoStat)) == first
    assert HourlyStat.objects.count() == 3


@pytest.mark.contract
def test_late_events_are_picked_up_when_recent_hours_are_aggregated_again(store, event, settings):
    settings.ANALYTICS_REAGGREGATE_HOURS = 3
    now = HOUR + timedelta(hours=2, minutes=5)
    store(event(occurred_at=HOUR + timedelta(minutes=1)))
    aggregation.aggregate_recent_hours(now=now)
    store(event(occurred_at=HOUR + timedelta(minutes=2)))  # arrives after its hour was aggregated

    aggregation.aggregate_recent_hours(now=now + timedelta(hours=1))

    assert HourlyStat.objects.get(hour=HOUR).access_count == 2
    assert DailyStat.objects.get().access_count == 2


@pytest.mark.contract
def test_an_hour_older_than_the_retention_keeps_its_rollup_when_aggregated_again(store, event, settings):
    settings.ANALYTICS_RETENTION_DAYS = 1
    store(event(occurred_at=HOUR + timedelta(minutes=1)), event(occurred_at=HOUR + timedelta(minutes=2)))
    aggregation.aggregate_hour(hour=HOUR, now=HOUR + timedelta(hours=2))
    before = (_rows(HourlyStat), _rows(DailyStat), _rows(GeoStat))
    AccessEvent.objects.all().delete()  # its raw events pruned, as they are past the retention
    later = HOUR + timedelta(days=2)

    with pytest.raises(aggregation.HourTooOld):
        aggregation.aggregate_hour(hour=HOUR, now=later)
    backfill = aggregation.aggregate_hours(start=HOUR, end=HOUR + timedelta(hours=1), now=later)

    assert (backfill.skipped_too_old, backfill.rows) == (1, 0)
    assert (_rows(HourlyStat), _rows(DailyStat), _rows(GeoStat)) == before  # not rebuilt from nothing
    assert HourlyStat.objects.get(hour=HOUR).access_count == 2


def test_p95_over_many_hours_is_within_2_percent_of_the_exact_value(store, event):
    rng = random.Random(7)
    start = NOW - timedelta(days=3)
    events = []
    for i in range(12_000):
        endpoint = "/slow" if i % 3 == 0 else "/fast"
        median = 120.0 if endpoint == "/slow" else 8.0
        events.append(
            event(
                endpoint=endpoint,
                occurred_at=start + timedelta(seconds=rng.uniform(0, 3 * 86400 - 3600)),
                duration_ms=rng.lognormvariate(0, 0.9) * median,
                client_ip=f"81.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            )
        )
    store(*events)
    aggregation.aggregate_hours(start=start - timedelta(hours=1), end=NOW - timedelta(hours=2), now=NOW)

    stats = {row.endpoint: row for row in queries.endpoint_stats(period="7d", now=NOW)}

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT endpoint, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms), count(DISTINCT client_ip),"
            " count(*) FROM tracker_accessevent GROUP BY endpoint"
        )
        exact = {name: (p95, clients, count) for name, p95, clients, count in cursor.fetchall()}
    for name, (p95, clients, count) in exact.items():
        assert stats[name].access_count == count
        assert abs(stats[name].p95_response_time_ms - p95) / p95 < 0.02, name
        assert abs(stats[name].unique_clients - clients) / clients < 0.06, name
    for row in HourlyStat.objects.filter(endpoint="/slow", access_count__gte=100):
        hour_exact = sorted(
            e.duration_ms
            for e in events
            if e.endpoint == "/slow" and row.hour <= e.occurred_at < row.hour + timedelta(hours=1)
        )
        assert row.unique_clients <= row.access_count
        assert abs(row.p95_response_time_ms - _nearest_rank(hour_exact, 0.95)) / row.p95_response_time_ms < 0.02


def _nearest_rank(values, fraction):
    import math

    return values[max(0, math.ceil(fraction * len(values)) - 1)]


def test_the_backfill_command_reports_progress_and_is_idempotent(store, event, capsys):
    hour = aggregation.last_complete_hour(now=timezone.now()) - timedelta(hours=3)
    store(event(occurred_at=hour), event(occurred_at=hour + timedelta(hours=2)))

    call_command("aggregate_hours", since=(hour - timedelta(hours=1)).isoformat())
    call_command("aggregate_hours", hour=(hour + timedelta(minutes=30)).isoformat())

    out = capsys.readouterr().out
    assert "5/5 hours" in out and "Aggregated 5 hour(s) into 2 HourlyStat row(s)." in out
    assert sorted(HourlyStat.objects.values_list("hour", "access_count")) == [
        (hour, 1),
        (hour + timedelta(hours=2), 1),
    ]


def test_the_backfill_command_rejects_a_bad_date():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a date"):
        call_command("aggregate_hours", since="last tuesday")


def test_the_running_hour_is_aggregated_up_to_a_moment_ago_and_raw_events_fill_the_rest(store, event, settings):
    settings.ANALYTICS_LIVE_LAG_SECONDS = 30
    now = datetime(2026, 3, 3, 12, 20, tzinfo=UTC)
    store(
        event(occurred_at=now - timedelta(minutes=25)),  # the previous hour, not aggregated yet
        event(occurred_at=now - timedelta(minutes=10)),
        event(occurred_at=now - timedelta(seconds=10)),  # after the cut: answered from raw events
    )

    aggregation.aggregate_live(now=now)

    rows = dict(HourlyStat.objects.values_list("hour", "covered_until"))
    assert rows == {
        datetime(2026, 3, 3, 11, tzinfo=UTC): datetime(2026, 3, 3, 12, tzinfo=UTC),
        datetime(2026, 3, 3, 12, tzinfo=UTC): now - timedelta(seconds=30),
    }
    for period in ("24h", "7d"):
        [row] = queries.endpoint_stats(period=period, now=now)
        assert row.access_count == 3, period
    series = queries.timeseries(period="24h", interval="1h", now=now)
    assert [p.access_count for p in series][-2:] == [1, 2]

    store(event(occurred_at=now + timedelta(seconds=5)))
    aggregation.aggregate_live(now=now + timedelta(minutes=1))  # the next run covers more
    [row] = queries.endpoint_stats(period="24h", now=now + timedelta(minutes=1))
    assert row.access_count == 4


def test_cached_merges_are_replaced_when_a_complete_hour_is_aggregated_again(
    store, event, settings, django_capture_on_commit_callbacks
):
    settings.ANALYTICS_REAGGREGATE_HOURS = 3
    now = datetime(2026, 3, 3, 12, 6, tzinfo=UTC)
    old = datetime(2026, 3, 3, 10, tzinfo=UTC)
    store(event(occurred_at=old + timedelta(minutes=1)))
    aggregation.aggregate_recent_hours(now=now)
    assert queries.endpoint_stats(period="7d", now=now)[0].access_count == 1  # cached now
    assert queries.endpoint_stats(period="7d", now=now)[0].access_count == 1

    store(event(occurred_at=old + timedelta(minutes=2)))  # late
    assert queries.endpoint_stats(period="7d", now=now)[0].access_count == 1  # not re-aggregated yet
    with django_capture_on_commit_callbacks(execute=True):  # the cache is forgotten once committed
        aggregation.aggregate_recent_hours(now=now)

    assert queries.endpoint_stats(period="7d", now=now)[0].access_count == 2
