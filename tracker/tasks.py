from celery import shared_task

from tracker import services


@shared_task(ignore_result=True)
def drain_events_task() -> int:
    """Beat entry point (every DRAIN_INTERVAL_SECONDS); returns the number of events stored."""
    return services.drain_buffer().stored
