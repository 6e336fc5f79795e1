"""manage.py generate_events: works on PostgreSQL and on the embedded SQLite, and feeds the counters."""

import sqlite3

import pytest
from django.core.management import call_command
from django.db.models import Sum

from tracker.models import AccessEvent, EndpointStat
from tracker.tests.processes import manage


@pytest.mark.django_db
def test_generated_events_are_stored_and_counted_per_endpoint_on_postgres(postgres_only):
    call_command("generate_events", count=500, days=1, endpoints=4, clients=50, error_rate=0.1)

    assert AccessEvent.objects.count() == 500
    counters = EndpointStat.objects.aggregate(
        access=Sum("access_count"), success=Sum("success_count"), errors=Sum("error_count")
    )
    assert counters == {
        "access": 500,
        "success": AccessEvent.objects.filter(is_error=False).count(),
        "errors": AccessEvent.objects.filter(is_error=True).count(),
    }
    for stat in EndpointStat.objects.all():
        newest = AccessEvent.objects.filter(endpoint=stat.endpoint).latest("occurred_at")
        assert stat.last_accessed_at == newest.occurred_at
        assert stat.access_count == AccessEvent.objects.filter(endpoint=stat.endpoint).count()


def test_generated_events_are_stored_and_counted_on_the_embedded_sqlite(tmp_path):
    env = {"SQLITE_PATH": str(tmp_path / "db.sqlite3"), "RUN_DIR": str(tmp_path), "DJANGO_SECRET_KEY": "test-only"}
    assert manage("migrate", "--no-input", env=env).returncode == 0
    generated = manage("generate_events", "--count", "1200", "--days", "1", "--endpoints", "3", env=env)
    assert generated.returncode == 0, generated.stderr

    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        events = db.execute("SELECT endpoint, count(*) FROM tracker_accessevent GROUP BY endpoint").fetchall()
        counters = db.execute("SELECT endpoint, access_count FROM tracker_endpointstat").fetchall()
    assert sum(n for _, n in events) == 1200
    assert sorted(counters) == sorted(events)
