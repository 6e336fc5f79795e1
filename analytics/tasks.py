"""Beat entry points (schedule in settings.CELERY_BEAT_SCHEDULE); each is one service call.

All are safe to run twice at once: aggregation upserts under an advisory lock, pruning only
deletes what is left, backups hold a cache lock (a second run returns without a file).
"""

from celery import shared_task

from analytics import backups, services


@shared_task(ignore_result=True, acks_late=True)
def aggregate_recent_hours_task() -> int:
    """Hourly: re-aggregate the last ANALYTICS_REAGGREGATE_HOURS hours; returns HourlyStat rows written."""
    return services.aggregate_recent_hours()


@shared_task(ignore_result=True, acks_late=True)
def aggregate_live_task() -> int:
    """Every ANALYTICS_LIVE_AGGREGATION_SECONDS: the running hour (and the previous one until complete)."""
    return services.aggregate_live()


@shared_task(ignore_result=True, acks_late=True)
def prune_events_task() -> int:
    """Daily: delete raw events older than ANALYTICS_RETENTION_DAYS; returns how many."""
    return services.prune_events().deleted


@shared_task(ignore_result=True)
def backup_database_task() -> str:
    """Daily: write a backup into BACKUP_DIR; returns its path ('' if another backup was running)."""
    try:
        with backups.exclusive():
            return str(backups.write_backup())
    except backups.BackupAlreadyRunning:
        return ""
