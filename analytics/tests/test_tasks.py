import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery.beat import Scheduler
from django.utils import timezone

from analytics import tasks
from analytics.models import HourlyStat
from analytics.services import aggregation
from endpointstats.celery import app as celery_app
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db


def _beat_runs(*, start: datetime, duration: timedelta, step: timedelta) -> dict[str, list[datetime]]:
    """When Celery beat's own scheduler, fed the settings' schedule, would send each task, on a clock
    passed in (beat started at `start` and checks every `step`)."""
    clock = [start]
    scheduler = Scheduler(app=celery_app)  # the in-memory base class: no schedule file is written
    entries: dict[str, list[Any]] = {}
    for entry in scheduler.schedule.values():
        assert entry.task is not None
        schedule: Any = copy.copy(entry.schedule)  # nowfun is not in celery-types
        schedule.nowfun = lambda: clock[0]
        entries[entry.task] = [schedule, start]
    runs: dict[str, list[datetime]] = {task: [] for task in entries}
    while clock[0] < start + duration:
        clock[0] += step
        for task, (schedule, last_run_at) in entries.items():
            if schedule.is_due(last_run_at).is_due:
                runs[task].append(clock[0])
                entries[task][1] = clock[0]
    return runs


def test_beat_sends_each_registered_task_at_its_cadence_and_backs_up_before_pruning():
    celery_app.loader.import_default_modules()
    day = datetime(2026, 3, 2, tzinfo=UTC)

    runs = _beat_runs(start=day, duration=timedelta(days=1), step=timedelta(seconds=30))

    assert set(runs) <= set(celery_app.tasks)  # a renamed task would leave beat sending a name nobody runs
    hourly = runs["analytics.tasks.aggregate_recent_hours_task"]
    assert [run.hour for run in hourly] == list(range(24))  # once in every hour,
    assert all(0 < run.minute <= 10 for run in hourly)  # soon after the hour it rolls up has closed
    assert len(runs["tracker.tasks.create_event_partitions_task"]) == 24  # a failed run is retried within the hour
    live = runs["analytics.tasks.aggregate_live_task"]
    assert max(b - a for a, b in zip([day, *live], live, strict=False)) <= timedelta(minutes=1)
    assert len(runs["tracker.tasks.drain_events_task"]) == 24 * 3600 // 30  # at every check beat makes
    (backup,) = runs["analytics.tasks.backup_database_task"]
    (prune,) = runs["analytics.tasks.prune_events_task"]
    assert backup < prune  # the night's backup still holds the raw events the prune deletes


def test_the_hourly_task_aggregates_the_recent_hours(store, event):
    hour = aggregation.last_complete_hour(now=timezone.now())
    store(event(occurred_at=hour + timedelta(minutes=3)), event(occurred_at=hour - timedelta(minutes=3)))

    assert tasks.aggregate_recent_hours_task() == 2
    assert tasks.aggregate_recent_hours_task() == 2  # twice: same rows

    assert sorted(HourlyStat.objects.values_list("hour", "access_count")) == [
        (hour - timedelta(hours=1), 1),
        (hour, 1),
    ]


def test_the_daily_prune_task_deletes_old_raw_events(store, event, settings):
    settings.ANALYTICS_RETENTION_DAYS = 2
    store(event(occurred_at=timezone.now() - timedelta(days=3)), event(occurred_at=timezone.now()))

    assert tasks.prune_events_task() == 1
    assert AccessEvent.objects.count() == 1
