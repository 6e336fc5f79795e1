from datetime import timedelta

import pytest
from celery.schedules import crontab
from django.conf import settings as django_settings
from django.utils import timezone

from analytics import tasks
from analytics.models import HourlyStat
from analytics.services import aggregation
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db


def test_the_beat_schedule_runs_aggregation_hourly_and_pruning_and_backups_daily():
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    entries = {entry["task"]: entry["schedule"] for entry in schedule.values()}

    assert entries["analytics.tasks.aggregate_recent_hours_task"] == crontab(minute=5)
    assert entries["analytics.tasks.aggregate_live_task"] == 60.0
    assert entries["analytics.tasks.prune_events_task"] == crontab(hour=3, minute=30)
    assert entries["analytics.tasks.backup_database_task"] == crontab(hour=2, minute=15)


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
