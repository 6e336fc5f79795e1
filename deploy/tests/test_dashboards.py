"""Grafana dashboards: modern panel types only, provisioned datasources, and every SQL query run
against the real PostgreSQL schema (after migrations) as the read-only reporting role."""

import json
import os
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from django.db import connection

from deploy.tests import k8s

GRAFANA = k8s.KUSTOMIZE / "base" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALLOWED_PANELS = {"timeseries", "piechart", "stat"}
TABLES = {
    "tracker_accessevent": "tracker (Foundation)",
    "tracker_endpointstat": "tracker (Foundation)",
    "analytics_hourlystat": "analytics (issue 4)",
    "analytics_geostat": "analytics (issue 4)",
}
FROM = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
TO = FROM + timedelta(hours=6)
INTERVALS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def panels():
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            yield path.name, panel


def sql_targets():
    variables = [
        pytest.param(variable["query"], "table", id=f"{path.name}:${variable['name']}")
        for path in DASHBOARDS
        for variable in json.loads(path.read_text())["templating"]["list"]
        if variable["datasource"]["type"] == "grafana-postgresql-datasource"
    ]
    return variables + [
        pytest.param(target["rawSql"], target["format"], id=f"{name}:{panel['title']}:{target['refId']}")
        for name, panel in panels()
        for target in panel["targets"]
        if "rawSql" in target
    ]


def seconds(interval: str) -> int:
    interval = interval.strip().strip("'\"")
    if interval == "$__interval":
        return 60
    return int(interval[:-1]) * INTERVALS[interval[-1]]


def expand_macros(sql: str, *, start_at=FROM, end_at=TO, endpoints: str = "'/stats','/'") -> str:
    """Grafana's PostgreSQL macros, expanded as Grafana expands them, for a fixed time range."""
    start, end = (f"'{moment.isoformat()}'" for moment in (start_at, end_at))

    def group(match, alias):
        column, interval = (part.strip() for part in match.group(1).split(",", 1))
        step = seconds(interval)
        return f"floor(extract(epoch from {column})/{step})*{step}" + (' AS "time"' if alias else "")

    sql = re.sub(r"\$__timeGroupAlias\(([^)]*)\)", lambda m: group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^)]*)\)", lambda m: group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(([^)]*)\)", lambda m: f"{m.group(1).strip()} BETWEEN {start} AND {end}", sql)
    sql = sql.replace("$__timeFrom()", start).replace("$__timeTo()", end)
    sql = sql.replace("$__interval_ms", "60000").replace("$__interval", "'1m'")
    sql = sql.replace("$endpoint", endpoints)  # the endpoint variable, as Grafana quotes a multi-value
    assert "$" not in sql, f"unexpanded Grafana variable in:\n{sql}"
    return sql


def test_dashboards_use_modern_panels_and_the_provisioned_datasources():
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources.yaml").read_text())["datasources"]
    uids = {source["uid"]: source["type"] for source in provisioned}
    assert set(uids.values()) == {"grafana-postgresql-datasource", "prometheus"}
    assert {path.name for path in DASHBOARDS} == {"api-usage.json", "system.json"}
    seen = set()
    for name, panel in panels():
        assert panel["type"] in ALLOWED_PANELS, f"{name}: {panel['title']} is a {panel['type']} panel"
        seen.add(panel["type"])
        for target in [panel, *panel["targets"]]:
            assert uids[target["datasource"]["uid"]] == target["datasource"]["type"], f"{name}: {panel['title']}"
    assert seen == ALLOWED_PANELS
    uids_of_dashboards = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(set(uids_of_dashboards)) == len(uids_of_dashboards)


@pytest.mark.django_db
def test_the_api_usage_panels_show_what_the_issue_asks_for_on_real_rows():
    # Requests, error rate, average response time and the endpoint distribution from the rollups
    # (p95 has its own test below); top clients from the raw events.
    from analytics.models import HourlyStat
    from tracker.models import AccessEvent

    hour = FROM + timedelta(hours=1)
    for endpoint, offset, count, errors, total_ms, timed in [
        ("/a", 0, 30, 3, 300.0, 30), ("/a", 1, 10, 0, 500.0, 10), ("/b", 0, 20, 5, 200.0, 10),
        ("/a", 9, 999, 999, 9.0, 999),  # outside the range: counts nowhere
    ]:  # fmt: skip
        HourlyStat.objects.create(
            endpoint=endpoint, hour=hour + timedelta(hours=offset), access_count=count, error_count=errors,
            total_response_time_ms=total_ms, timed_count=timed, covered_until=hour + timedelta(hours=offset + 1),
        )  # fmt: skip
    for client_ip, count in [("203.0.113.7", 3), ("198.51.100.2", 1), (None, 2)]:
        for n in range(count):
            AccessEvent.objects.create(
                event_id=uuid.uuid4(), endpoint="/a", status_code=200, duration_ms=1.0, client_ip=client_ip,
                occurred_at=FROM + timedelta(minutes=n),
            )  # fmt: skip

    def panel(title: str) -> list:
        return run_panel(title, start_at=FROM, end_at=TO, endpoints="'/a','/b'")

    assert panel("Requests") == [(60,)]
    assert float(panel("Error rate")[0][0]) == pytest.approx(100 * 8 / 60)
    assert float(panel("Average response time")[0][0]) == pytest.approx(1000 / 50)  # per timed request
    assert panel("Endpoint distribution") == [("/a", 40), ("/b", 20)]
    assert panel("Top clients (last 3 hours)") == [("203.0.113.7", 3), ("unknown", 2), ("198.51.100.2", 1)]


def test_the_system_dashboard_shows_pods_and_the_apps_own_metrics():
    exprs = " ".join(t["expr"] for name, panel in panels() if name == "system.json" for t in panel["targets"])
    for metric in (
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_start_time_seconds",  # restarts
        "endpointstats_ratelimit_decisions_total",
        "endpointstats_buffer_events",
        "endpointstats_drain_lag_seconds_bucket",
    ):
        assert metric in exprs, metric


@pytest.fixture
def reporting_role(django_db_blocker):
    """A real read-only role granted by the migrate Job's SQL file, run with psql as in the cluster."""
    role = f"es_reporting_{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" NOLOGIN')
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    sql_file = k8s.KUSTOMIZE / "base/sql/reporting-grants.sql"
    result = subprocess.run(
        ["psql", url, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-v", f"role={role}", "-f", str(sql_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGPASSWORD": db["PASSWORD"] or ""},
    )
    assert result.returncode == 0, result.stderr
    yield role
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f'DROP OWNED BY "{role}"')
        cursor.execute(f'DROP ROLE "{role}"')


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_tables_exist_after_migrations():
    existing = set(connection.introspection.table_names())
    missing = [f"{table} (from {owner})" for table, owner in TABLES.items() if table not in existing]
    assert not missing, "dashboard tables missing after migrations: " + ", ".join(missing)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("sql", "fmt"), sql_targets())
def test_every_dashboard_query_runs_against_the_real_schema_as_the_reporting_role(reporting_role, sql, fmt):
    from tracker.models import AccessEvent

    # A row in range so aggregates and percentiles really run (and one the role can read).
    AccessEvent.objects.create(
        event_id=uuid.uuid4(), endpoint="/stats", status_code=200, duration_ms=12.5,
        client_ip="203.0.113.7", occurred_at=FROM + timedelta(minutes=5),
    )  # fmt: skip
    used = {table for table in TABLES if re.search(rf"\b{table}\b", sql)}
    existing = set(connection.introspection.table_names())
    missing = [f"{table} (from {TABLES[table]})" for table in sorted(used - existing)]
    assert not missing, "the query reads tables that do not exist: " + ", ".join(missing)
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{reporting_role}"')
        try:
            cursor.execute(expand_macros(sql))
            columns = [column.name for column in cursor.description]
            cursor.fetchall()
        finally:
            cursor.execute("RESET ROLE")
    if fmt == "time_series":
        assert columns[0] == "time", f"a time series query must return its time column first: {columns}"
    assert len(columns) >= 2 or fmt == "table"


@pytest.mark.django_db(transaction=True)
def test_the_reporting_role_cannot_read_anything_else(reporting_role):
    from django.db.utils import ProgrammingError

    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{reporting_role}"')
        try:
            with pytest.raises(ProgrammingError, match="permission denied"):
                cursor.execute("SELECT password FROM auth_user")
        finally:
            cursor.execute("RESET ROLE")


# --- What the panels show, on real rows -------------------------------------------------------------

# Units Grafana knows (its value formats), the ones these dashboards may use.
GRAFANA_UNITS = {"short", "none", "percent", "percentunit", "ms", "s", "bytes", "Bps", "reqps", "dtdurations"}
PER_SECOND_UNITS = {"reqps", "Bps"}


def api_usage() -> dict:
    return json.loads((GRAFANA / "dashboards/api-usage.json").read_text())


def panel_sql(title: str) -> str:
    (panel,) = [panel for panel in api_usage()["panels"] if panel["title"] == title]
    return panel["targets"][0]["rawSql"]


def run_panel(title: str, *, start_at, end_at, endpoints: str = "'/a','/b','/c','/d','/e','/f','/g'") -> list:
    with connection.cursor() as cursor:
        cursor.execute(expand_macros(panel_sql(title), start_at=start_at, end_at=end_at, endpoints=endpoints))
        return cursor.fetchall()


def hourly(endpoint: str, hour: datetime, count: int, p95: float, countries: dict) -> None:
    from analytics.models import HourlyStat

    HourlyStat.objects.create(
        endpoint=endpoint, hour=hour, access_count=count, p95_response_time_ms=p95, country_counts=countries,
        covered_until=hour + timedelta(hours=1),
    )  # fmt: skip


@pytest.mark.django_db
def test_the_countries_panel_counts_exactly_the_requests_of_the_range_across_midnight():
    # 24 h from 12:00 to 12:00 spans two calendar days; traffic outside the range must not count.
    start = datetime(2026, 3, 2, 12, tzinfo=UTC)
    for offset in range(-30, 40, 3):
        hour = start + timedelta(hours=offset)
        hourly("/a", hour, 10, 5.0, {"DE": 6, "": 4})
    (requests,) = run_panel("Requests", start_at=start, end_at=start + timedelta(hours=24) - timedelta(seconds=1))
    countries = dict(run_panel("Countries", start_at=start, end_at=start + timedelta(hours=24) - timedelta(seconds=1)))

    assert requests[0] == 80  # 8 rows in range
    assert countries == {"DE": 48, "unknown": 32}
    assert sum(countries.values()) == requests[0]


@pytest.mark.django_db
def test_the_p95_panel_shows_the_slowest_endpoints_not_the_busiest():
    hour = datetime(2026, 3, 1, 1, tzinfo=UTC)
    for name, count, p95 in [("/a", 1000, 5), ("/b", 900, 6), ("/c", 800, 7), ("/d", 700, 8), ("/e", 600, 9),
                             ("/f", 50, 900), ("/g", 40, 800)]:  # fmt: skip
        hourly(name, hour, count, p95, {})
    hourly("/h", hour, 3, 5000, {})  # too few requests to rank

    rows = run_panel("p95 response time per hour, slowest endpoints", start_at=FROM, end_at=TO,
                     endpoints="'/a','/b','/c','/d','/e','/f','/g','/h'")  # fmt: skip

    assert {endpoint for _, endpoint, _ in rows} == {"/f", "/g", "/e", "/d", "/c"}


@pytest.mark.django_db
def test_the_endpoint_variable_filters_the_panels():
    hour = datetime(2026, 3, 1, 1, tzinfo=UTC)
    hourly("/a", hour, 10, 5, {"FR": 10})
    hourly("/b", hour, 7, 5, {"US": 7})

    assert run_panel("Requests", start_at=FROM, end_at=TO, endpoints="'/b'") == [(7,)]
    assert dict(run_panel("Countries", start_at=FROM, end_at=TO, endpoints="'/b'")) == {"US": 7}
    assert run_panel("Requests", start_at=FROM, end_at=TO) == [(17,)]


def test_every_panel_filters_by_the_endpoint_variable_and_the_variable_lists_the_ranges_endpoints():
    dashboard = api_usage()
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "endpoint" and variable["multi"] and variable["includeAll"]
    assert "analytics_hourlystat" in variable["query"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            text = target.get("rawSql") or target["expr"]
            assert "$endpoint" in text or "${endpoint" in text, panel["title"]


def test_client_errors_and_rate_limited_requests_have_panels():
    exprs = {panel["title"]: panel["targets"][0].get("expr", "") for panel in api_usage()["panels"]}
    (errors,) = [expr for title, expr in exprs.items() if "4xx" in title]
    (limited,) = [expr for title, expr in exprs.items() if "429" in title]
    assert 'status="4xx"' in errors and "endpointstats_http_requests_total" in errors
    assert "endpointstats_ratelimit_decisions_total" in limited and "limited" in limited


def test_units_are_grafana_units_and_rates_are_per_second():
    for name, panel in panels():
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit in GRAFANA_UNITS, f"{name}: {panel['title']} has unit {unit!r}"
        exprs = [target["expr"] for target in panel["targets"] if "expr" in target]
        rates = exprs and all("rate(" in expr and "histogram_quantile" not in expr for expr in exprs)
        if rates and "cores" not in panel["title"]:  # CPU seconds per second are cores, a plain number
            assert unit in PER_SECOND_UNITS, f"{name}: {panel['title']} is a per-second rate in {unit!r}"


def test_descriptions_of_rollup_panels_say_the_running_hour_is_aggregated_every_minute():
    from django.conf import settings

    assert settings.ANALYTICS_LIVE_AGGREGATION_SECONDS == 60
    for _, panel in panels():
        sql = " ".join(target.get("rawSql", "") for target in panel["targets"])
        if "analytics_hourlystat" in sql:
            assert "every minute for the running hour" in panel["description"], panel["title"]
        assert "appears after it is aggregated" not in panel.get("description", "")
