from celery import shared_task
from django.utils import timezone

from tracker import buffer, partitions, services


@shared_task(ignore_result=True)
def drain_events_task() -> int:
    """Beat entry point (every DRAIN_INTERVAL_SECONDS): one drain_shard_task per shard, so idle
    workers drain shards in parallel; returns the number of tasks sent."""
    for shard in range(buffer.shard_count()):
        drain_shard_task.apply_async((shard,), expires=10)
    return buffer.shard_count()


@shared_task(ignore_result=True)
def drain_shard_task(shard: int) -> int:
    """Drain one shard (returns at once if another drain holds it); returns the number of events stored."""
    return services.drain_shard(shard=shard).stored


@shared_task(ignore_result=True, acks_late=True)  # idempotent: a day that exists is skipped
def create_event_partitions_task() -> int:
    """Hourly: AccessEvent partitions for the next TRACKING_PARTITION_DAYS_AHEAD days; returns how many were created."""
    return len(partitions.create_partitions(now=timezone.now()))
