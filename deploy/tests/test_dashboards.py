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
    return [
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


def expand_macros(sql: str) -> str:
    """Grafana's PostgreSQL macros, expanded as Grafana expands them, for a fixed time range."""
    start, end = (f"'{moment.isoformat()}'" for moment in (FROM, TO))

    def group(match, alias):
        column, interval = (part.strip() for part in match.group(1).split(",", 1))
        step = seconds(interval)
        return f"floor(extract(epoch from {column})/{step})*{step}" + (' AS "time"' if alias else "")

    sql = re.sub(r"\$__timeGroupAlias\(([^)]*)\)", lambda m: group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^)]*)\)", lambda m: group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(([^)]*)\)", lambda m: f"{m.group(1).strip()} BETWEEN {start} AND {end}", sql)
    sql = sql.replace("$__timeFrom()", start).replace("$__timeTo()", end)
    sql = sql.replace("$__interval_ms", "60000").replace("$__interval", "'1m'")
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


def test_the_api_usage_dashboard_shows_what_the_issue_asks_for():
    titles = " | ".join(panel["title"].lower() for name, panel in panels() if name == "api-usage.json")
    for words in ("requests", "average response time", "p95", "error rate", "endpoint distribution", "top clients"):
        assert words in titles, words


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
