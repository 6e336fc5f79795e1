"""Beat entry points (schedule in settings.CELERY_BEAT_SCHEDULE); each is one service call.

All are safe to run twice at once: aggregation upserts under an advisory lock, pruning only
deletes what is left, backups hold a cache lock (a second run returns without a file).
"""

from celery import shared_task
from django.utils import timezone

from analytics import backups
from analytics.services import aggregation, retention


@shared_task(ignore_result=True, acks_late=True)
def aggregate_recent_hours_task() -> int:
    """Hourly: re-aggregate the last ANALYTICS_REAGGREGATE_HOURS hours; returns HourlyStat rows written."""
    return aggregation.aggregate_recent_hours(now=timezone.now())


@shared_task(ignore_result=True, acks_late=True)
def aggregate_live_task() -> int:
    """Every ANALYTICS_LIVE_AGGREGATION_SECONDS: the running hour (and the previous one until complete)."""
    return aggregation.aggregate_live(now=timezone.now())


@shared_task(ignore_result=True, acks_late=True)
def prune_events_task() -> int:
    """Daily: delete raw events older than ANALYTICS_RETENTION_DAYS; returns how many."""
    return retention.prune_events(now=timezone.now()).deleted


@shared_task(ignore_result=True)
def backup_database_task() -> str:
    """Daily: write a backup into BACKUP_DIR; returns its path ('' if another backup was running)."""
    try:
        with backups.exclusive():
            return str(backups.write_backup(now=timezone.now()))
    except backups.BackupAlreadyRunning:
        return ""
