"""AccessEvent day partitions on PostgreSQL: created ahead, the default partition, the migration."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tracker import partitions, services, tasks
from tracker.models import AccessEvent, EndpointStat

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _rows_in(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_an_event_for_a_day_without_partition_is_kept_and_moved_when_its_day_is_created(make_event):
    events = [make_event(occurred_at=DAY + timedelta(hours=h)) for h in range(3)]
    events.append(make_event(occurred_at=DAY - timedelta(days=30)))  # a day that stays without partition
    assert services.store_events(events) == 4
    ids = set(AccessEvent.objects.values_list("id", flat=True))
    assert _rows_in(partitions.DEFAULT_PARTITION) == 4

    created = partitions.create_partitions(now=DAY + timedelta(hours=12), days_ahead=2)

    assert created == [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    assert _rows_in("tracker_accessevent_p20260301") == 3
    assert _rows_in(partitions.DEFAULT_PARTITION) == 1
    assert set(AccessEvent.objects.values_list("id", flat=True)) == ids
    assert partitions.create_partitions(now=DAY + timedelta(hours=12), days_ahead=2) == []  # idempotent


@pytest.mark.django_db
def test_the_beat_task_creates_the_days_ahead(settings):
    settings.TRACKING_PARTITION_DAYS_AHEAD = 9  # the migration made 7 days ahead of the day it ran
    today = datetime.now(UTC).date()  # read before the task does: past midnight it only adds a day

    tasks.create_event_partitions_task()

    days = {partition.day for partition in partitions.day_partitions()}
    assert {today + timedelta(days=n) for n in range(-1, 10)} <= days
    assert "tracker-create-event-partitions" in settings.CELERY_BEAT_SCHEDULE


@pytest.mark.django_db
def test_a_redelivered_batch_is_stored_once_in_the_partitioned_table(make_event):
    partitions.create_partitions(now=DAY, days_ahead=0)
    events = [make_event(occurred_at=DAY + timedelta(minutes=m), endpoint="/p") for m in range(5)]

    assert services.store_events(events) == 5
    assert services.store_events(events + [make_event(occurred_at=DAY, endpoint="/p")]) == 1

    assert _rows_in("tracker_accessevent_p20260301") == 6
    assert EndpointStat.objects.get(endpoint="/p").access_count == 6


@pytest.mark.django_db
def test_dropping_old_days_keeps_every_younger_day(make_event):
    partitions.create_partitions(now=DAY, days_ahead=2)
    services.store_events([make_event(occurred_at=DAY + timedelta(days=d, hours=1)) for d in range(-1, 3)])

    dropped = partitions.drop_partitions_before(cutoff=DAY + timedelta(days=1, hours=6))

    assert [partition.name for partition in dropped] == [
        "tracker_accessevent_p20260228",
        "tracker_accessevent_p20260301",
    ]
    assert sorted(AccessEvent.objects.values_list("occurred_at", flat=True)) == [
        DAY + timedelta(days=1, hours=1),  # its day is partly inside the retention: kept until wholly outside
        DAY + timedelta(days=2, hours=1),
    ]
    assert partitions.drop_partitions_before(cutoff=DAY + timedelta(days=1, hours=6)) == []


def _migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migration_partitions_a_table_holding_data_and_back():
    existing = {partition.name for partition in partitions.day_partitions()}
    try:
        _migrate(("tracker", "0002_accessevent_country"))
        assert not partitions.is_partitioned()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO tracker_accessevent (event_id, endpoint, method, is_error, user_agent, pod_name,"
                " country, occurred_at) SELECT gen_random_uuid(), '/old', 'GET', false, '', '', '',"
                " now() - n * interval '7 hours' FROM generate_series(1, 300) AS n"
            )
        EndpointStat.objects.create(endpoint="/old", access_count=300, success_count=300)
        before = sorted(AccessEvent.objects.values_list("id", "event_id", "occurred_at"))

        _migrate()

        assert partitions.is_partitioned()
        assert sorted(AccessEvent.objects.values_list("id", "event_id", "occurred_at")) == before
        assert _rows_in(partitions.DEFAULT_PARTITION) == 0  # every day holding rows got its partition
        assert len(partitions.day_partitions()) >= 300 * 7 // 24
        assert EndpointStat.objects.get(endpoint="/old").access_count == 300
        newer = AccessEvent.objects.create(event_id="0" * 32, endpoint="/new", occurred_at=datetime.now(UTC))
        assert newer.id > max(row[0] for row in before)  # ids continue after the copied ones

        _migrate(("tracker", "0002_accessevent_country"))  # and back, still with every row

        assert not partitions.is_partitioned()
        assert AccessEvent.objects.count() == 301
        assert AccessEvent.objects.create(event_id="1" * 32, endpoint="/new", occurred_at=DAY).id > newer.id
    finally:
        _migrate()
        # The 87 past days it partitioned are committed (flushing after the test empties tables, it
        # drops none): left, they would take the old events of later tests in this database.
        with connection.cursor() as cursor:
            for partition in partitions.day_partitions():
                if partition.name not in existing:
                    cursor.execute(f'DROP TABLE "{partition.name}"')
    assert partitions.is_partitioned()
