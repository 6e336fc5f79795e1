from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from analytics import periods, queries
from analytics.services import aggregation

pytestmark = pytest.mark.django_db


@pytest.fixture
def now():
    return timezone.now()


@pytest.mark.contract
def test_stats_for_a_short_period_are_exact_from_raw_events(client, store, event, now):
    store(
        event(endpoint="/a", occurred_at=now - timedelta(minutes=10), duration_ms=100.0, client_ip="8.8.8.8"),
        event(endpoint="/a", occurred_at=now - timedelta(minutes=5), duration_ms=300.0, is_error=True),
        event(endpoint="/a", occurred_at=now - timedelta(hours=2)),  # outside 1h
    )

    response = client.get("/analytics/stats", {"period": "1h"})

    assert response.status_code == 200
    body = response.json()
    assert body["period"] == "1h"
    [row] = body["stats"]
    assert set(row) == {
        "endpoint",
        "access_count",
        "avg_response_time",
        "p95_response_time",
        "last_accessed",
        "unique_clients",
        "error_count",
    }
    assert (row["endpoint"], row["access_count"], row["error_count"], row["unique_clients"]) == ("/a", 2, 1, 2)
    assert row["avg_response_time"] == pytest.approx(0.2)
    assert row["p95_response_time"] == pytest.approx(0.3, rel=0.015)


@pytest.mark.contract
def test_stats_for_a_day_or_more_combine_rollups_and_the_newest_raw_events(client, store, event, now):
    old_hour = periods.floor_time(now, periods.HOUR) - timedelta(hours=5)
    store(
        *[event(endpoint="/a", occurred_at=old_hour + timedelta(minutes=i), client_ip=f"8.8.8.{i}") for i in range(10)]
    )
    aggregation.aggregate_hour(hour=old_hour, now=now)
    store(event(endpoint="/a", occurred_at=now - timedelta(minutes=1), client_ip="9.9.9.9"))  # not aggregated yet

    for period in ("24h", "7d", "30d"):
        [row] = client.get("/analytics/stats", {"period": period, "endpoint": "/a"}).json()["stats"]
        assert (row["access_count"], row["unique_clients"]) == (11, 11), period


def test_an_unknown_period_is_a_400_listing_the_allowed_values(client):
    response = client.get("/analytics/stats", {"period": "2w"})

    assert response.status_code == 400
    assert response.json()["details"]["period"] == ['"2w" is not a valid period; use one of: 1h, 6h, 24h, 7d, 30d.']


@pytest.mark.contract
def test_timeseries_has_every_bucket_with_zeros_where_there_was_no_traffic(client, store, event, now):
    store(event(endpoint="/a", occurred_at=now - timedelta(minutes=1), duration_ms=40.0))

    response = client.get("/analytics/timeseries", {"endpoint": "/a", "period": "1h", "interval": "15m"})

    assert response.status_code == 200
    series = response.json()["timeseries"]
    assert len(series) in (4, 5)  # the first bucket starts at a quarter hour, the last holds now
    # The event is a minute old: in the newest bucket, or the one before it just after a quarter hour.
    assert [point["access_count"] for point in series][:-2] == [0] * (len(series) - 2)
    assert series[-1]["access_count"] + series[-2]["access_count"] == 1
    assert set(series[0]) == {"timestamp", "access_count", "avg_response_time", "error_count"}
    assert series[0]["avg_response_time"] == 0.0


def test_timeseries_without_an_endpoint_names_it_in_each_point(client, store, event, now):
    hour = periods.floor_time(now, periods.HOUR) - timedelta(hours=3)
    store(event(endpoint="/a", occurred_at=hour), event(endpoint="/b", occurred_at=hour, is_error=True))
    aggregation.aggregate_hour(hour=hour, now=now)
    store(event(endpoint="/b", occurred_at=now))

    series = client.get("/analytics/timeseries", {"period": "24h", "interval": "1h"}).json()["timeseries"]

    assert {p["endpoint"] for p in series} == {"/a", "/b"}
    assert len(series) == 2 * 25
    by_key = {(p["timestamp"], p["endpoint"]): p for p in series}
    stamp = hour.isoformat().replace("+00:00", "Z")
    assert (by_key[(stamp, "/b")]["access_count"], by_key[(stamp, "/b")]["error_count"]) == (1, 1)
    assert sum(p["access_count"] for p in series if p["endpoint"] == "/b") == 2


def test_daily_timeseries_reads_daily_rollups(client, store, event, now):
    day_hour = periods.floor_time(now, periods.DAY) - timedelta(days=2) + timedelta(hours=3)
    store(*[event(endpoint="/a", occurred_at=day_hour) for _ in range(4)])
    aggregation.aggregate_hour(hour=day_hour, now=now)

    series = client.get("/analytics/timeseries", {"endpoint": "/a", "period": "7d", "interval": "1d"}).json()[
        "timeseries"
    ]

    assert len(series) == 8
    assert [p["access_count"] for p in series].count(4) == 1
    assert sum(p["access_count"] for p in series) == 4


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"interval": "2m"}, "interval", '"2m" is not a valid interval; use one of: 5m, 15m, 1h, 1d.'),
        ({"period": "7d", "interval": "5m"}, "interval", "With period 7d use one of: 1h, 1d."),
    ],
)
def test_an_unknown_or_unfit_interval_is_a_400(client, params, field, message):
    response = client.get("/analytics/timeseries", params)

    assert response.status_code == 400
    assert response.json()["details"][field] == [message]


@pytest.mark.contract
def test_geo_counts_requests_per_country_and_private_addresses_have_none(client, store, event, now):
    hour = periods.floor_time(now, periods.HOUR) - timedelta(hours=2)
    store(
        event(endpoint="/a", occurred_at=hour, client_ip="81.2.69.160"),  # GB
        event(endpoint="/a", occurred_at=hour, client_ip="8.8.8.8"),  # US
        event(endpoint="/b", occurred_at=hour, client_ip="8.8.4.4"),  # US
        event(endpoint="/a", occurred_at=hour, client_ip="192.168.1.5"),
        event(endpoint="/a", occurred_at=hour, client_ip="127.0.0.1"),
    )
    aggregation.aggregate_hour(hour=hour, now=now)
    store(event(endpoint="/a", occurred_at=now, client_ip="81.2.69.161"))

    everything = client.get("/analytics/geo", {"period": "7d"}).json()
    only_a = client.get("/analytics/geo", {"period": "1h", "endpoint": "/a"}).json()

    assert everything == {
        "period": "7d",
        "endpoint": None,
        "count": 3,
        "limit": 100,
        "offset": 0,
        "next_offset": None,
        "geo": [
            {"country_code": None, "access_count": 2},
            {"country_code": "GB", "access_count": 2},
            {"country_code": "US", "access_count": 2},
        ],
    }
    assert only_a["geo"] == [{"country_code": "GB", "access_count": 1}]
    assert client.get("/analytics/geo", {"period": "1y"}).status_code == 400


def test_a_timeseries_over_the_point_limit_is_a_400_that_states_the_limit(client, store, event, now, settings):
    settings.ANALYTICS_MAX_POINTS = 60
    store(*(event(endpoint=f"/e{i}", occurred_at=now - timedelta(minutes=2)) for i in range(3)))

    too_many = client.get("/analytics/timeseries", {"period": "24h", "interval": "1h"})  # 3 x 25 points
    one_endpoint = client.get("/analytics/timeseries", {"endpoint": "/e0", "period": "24h", "interval": "1h"})

    assert too_many.status_code == 400
    assert too_many.json()["details"]["interval"] == [
        "This series would have 75 points (buckets x endpoints); the limit is 60 (ANALYTICS_MAX_POINTS): "
        "ask for one endpoint, a shorter period or a longer interval."
    ]
    assert one_endpoint.status_code == 200 and len(one_endpoint.json()["timeseries"]) == 25


def test_stats_survive_events_of_a_new_endpoint_committed_between_their_two_statements(store, event, now):
    """The two statements of summarize_events each see their own snapshot: events of an endpoint
    committed between them (the drain runs meanwhile) once made the second one raise KeyError."""
    store(event(endpoint="/old", occurred_at=now - timedelta(minutes=5)))
    late = event(endpoint="/late", occurred_at=now - timedelta(minutes=1))
    statements = []

    def drain_in_between(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        statements.append(sql)
        if len(statements) == 1:  # right after the first statement: the drain commits new events
            store(late)
        return result

    with connection.execute_wrapper(drain_in_between):
        rows = queries.endpoint_stats(period="1h", now=now)

    assert [row.endpoint for row in rows] == ["/old"]
    assert "GROUP BY endpoint, client_ip" in statements[-1]  # the clients statement ran after the late commit


@pytest.mark.parametrize("path", ["/analytics/stats", "/analytics/timeseries", "/analytics/geo"])
def test_a_parameter_given_empty_is_a_400_not_the_default(client, path):
    response = client.get(path, {"period": "", "endpoint": ""})

    assert response.status_code == 400
    assert response.json()["details"] == {
        "period": ["May not be empty: leave it out for the default."],
        "endpoint": ["May not be empty: leave it out for the default."],
    }


@pytest.mark.parametrize("path,key", [("/analytics/stats", "stats"), ("/analytics/geo", "geo")])
def test_list_answers_come_in_pages_and_a_limit_over_the_maximum_is_a_400_that_says_it(
    client, store, event, now, settings, path, key
):
    settings.ANALYTICS_PAGE_SIZE, settings.ANALYTICS_MAX_PAGE_SIZE = 2, 3
    addresses = ["81.2.69.160", "8.8.8.8", "1.1.1.1", "10.0.0.1", "89.160.20.112"]  # GB, US, AU, private, SE
    store(
        *[
            event(endpoint=f"/e{i}", occurred_at=now - timedelta(minutes=5), client_ip=address)
            for i, address in enumerate(addresses)
        ]
    )
    everything = []
    offset = 0
    while offset is not None:
        body = client.get(path, {"period": "1h", "offset": offset}).json()
        assert (body["count"], body["limit"], body["offset"]) == (body["count"], 2, offset)
        assert len(body[key]) <= 2
        everything += body[key]
        offset = body["next_offset"]
    assert len(everything) == body["count"] >= 4
    at_max = client.get(path, {"period": "1h", "limit": 3})
    assert at_max.status_code == 200 and len(at_max.json()[key]) == 3

    over = client.get(path, {"period": "1h", "limit": 4})

    assert over.status_code == 400
    assert over.json()["details"] == {
        "limit": ["At most 3 rows per page (ANALYTICS_MAX_PAGE_SIZE); ask for the next ones with offset."]
    }
    for bad in ({"limit": 0}, {"offset": -1}, {"limit": "ten"}, {"offset": [0, 2]}):
        assert client.get(path, {"period": "1h", **bad}).status_code == 400
    assert client.get(path, {"period": "1h", "offset": [0, 2]}).json()["details"] == {"offset": ["Give it once."]}


def test_the_schema_documents_the_page_parameters_and_their_maximum(client, settings):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for path in ("/analytics/stats", "/analytics/geo"):
        operation = schema["paths"][path]["get"]
        parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
        assert parameters["limit"]["schema"]["maximum"] == settings.ANALYTICS_MAX_PAGE_SIZE
        assert parameters["offset"]["schema"]["minimum"] == 0
        assert "400" in operation["responses"]
