from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from analytics.models import HourlyStat
from analytics.services import aggregation, retention
from tracker import partitions
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_day_partitions_left_by_other_tests(db):
    """Transactional tests that ran earlier in this database (under xdist: whichever share this
    worker) commit the day partitions they create; past ones would take these tests' old events and
    be dropped instead of pruned row by row. Dropped inside this test's transaction, so they return."""
    yesterday = timezone.now().date() - timedelta(days=1)
    with connection.cursor() as cursor:
        for partition in partitions.day_partitions():
            if partition.day < yesterday:
                cursor.execute(f'DROP TABLE "{partition.name}"')


def test_pruning_deletes_only_raw_events_older_than_the_retention_in_batches(store, event, settings):
    settings.ANALYTICS_RETENTION_DAYS = 7
    now = timezone.now()
    old_hour = aggregation.last_complete_hour(now=now) - timedelta(days=6, hours=20)
    store(*[event(occurred_at=now - timedelta(days=8, minutes=i)) for i in range(25)])
    store(*[event(occurred_at=old_hour + timedelta(minutes=i)) for i in range(5)])
    aggregation.aggregate_hour(hour=old_hour, now=now)
    kept = set(AccessEvent.objects.filter(occurred_at__gte=now - timedelta(days=7)).values_list("pk", flat=True))
    calls = []

    result = retention.prune_events(now=now, batch_size=10, progress=lambda deleted, batches: calls.append(deleted))

    assert (result.deleted, result.batches) == (25, 3)
    assert calls == [10, 20, 25]
    assert set(AccessEvent.objects.values_list("pk", flat=True)) == kept
    assert HourlyStat.objects.get(hour=old_hour).access_count == 5  # rollups are kept
    assert retention.prune_events(now=now).deleted == 0  # idempotent


def test_the_prune_command_says_what_it_did(store, event, settings, capsys):
    settings.ANALYTICS_RETENTION_DAYS = 1
    store(event(occurred_at=timezone.now() - timedelta(days=3)))

    call_command("prune_events", batch_size=100)

    assert "Deleted 1 raw event(s) older than" in capsys.readouterr().out
    assert AccessEvent.objects.count() == 0


def test_pruning_drops_whole_day_partitions_and_deletes_rows_only_from_the_default_one(store, event, settings):
    settings.ANALYTICS_RETENTION_DAYS = 7
    now = datetime(2026, 3, 20, 12, tzinfo=UTC)
    partitions.create_partitions(now=now - timedelta(days=10), days_ahead=10)  # 9 to 20 March
    store(*[event(occurred_at=now - timedelta(days=9, minutes=i)) for i in range(4)])  # 11 March
    store(event(occurred_at=now - timedelta(days=40)))  # a day without partition: the default one
    kept = store(event(occurred_at=now - timedelta(days=6, hours=23)), event(occurred_at=now - timedelta(days=2)))

    result = retention.prune_events(now=now)

    assert result.dropped_partitions == tuple(f"tracker_accessevent_p202603{day:02}" for day in range(9, 13))
    assert result.deleted == 1
    assert AccessEvent.objects.count() == kept == 2
    assert retention.prune_events(now=now).dropped_partitions == ()
