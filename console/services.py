"""Writes of the ops console: record an operation request, and carry it out in a worker.

The web request only creates a TaskRun and enqueues its task (views call
tasks.execute_task_run_task.delay_on_commit); the work itself runs here, in the worker, through
the owning apps' services. Every operation is safe to run while beat runs the same work
(aggregation upserts under a lock, pruning deletes what is left, backups and drains hold locks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from analytics import backups
from analytics.services import aggregation, retention
from console.models import TaskRun
from tracker import buffer
from tracker import services as tracker_services

logger = logging.getLogger(__name__)
Outcome = tuple[int | None, str]  # (rows touched, what was done)


def request_task_run(*, kind: str, params: dict, user: User | AnonymousUser | None) -> TaskRun:
    """A queued run of `kind` (a TaskRun.Kind) with JSON-safe params; the caller enqueues its task."""
    if kind not in TaskRun.Kind.values:
        raise ValueError(f"Unknown operation {kind!r}.")
    requested_by = user if user is not None and user.is_authenticated else None
    return TaskRun.objects.create(kind=kind, params=params, requested_by=requested_by)


def execute_task_run(*, run_id: int, celery_task_id: str = "") -> TaskRun:
    """Run a queued TaskRun once: queued -> running -> succeeded (rows, detail) or failed (the error).

    A run that is not queued any more (a duplicate delivery) is left as it is. Never raises for
    a failing operation: the failure is the run's outcome.
    """
    claimed = TaskRun.objects.filter(pk=run_id, status=TaskRun.Status.QUEUED).update(
        status=TaskRun.Status.RUNNING, started_at=timezone.now(), celery_task_id=celery_task_id
    )
    run = TaskRun.objects.get(pk=run_id)
    if not claimed:
        return run
    try:
        rows, detail = OPERATIONS[run.kind](run.params)
    except Exception as error:  # the operator sees it in the admin; the worker log has the traceback
        logger.exception("Console operation %s failed", run)
        TaskRun.objects.filter(pk=run_id).update(
            status=TaskRun.Status.FAILED, finished_at=timezone.now(), detail=f"{type(error).__name__}: {error}"
        )
    else:
        TaskRun.objects.filter(pk=run_id).update(
            status=TaskRun.Status.SUCCEEDED, finished_at=timezone.now(), rows=rows, detail=detail
        )
    run.refresh_from_db()
    return run


def _moment(value: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        raise ValueError(f"{value!r} is not an ISO date and time.")
    return moment


def _aggregate(params: dict) -> Outcome:
    result = aggregation.aggregate_hours(start=_moment(params["start"]), end=_moment(params["end"]), now=timezone.now())
    detail = f"{result.hours} hour(s) aggregated into {result.rows:,} HourlyStat row(s)"
    if result.skipped_too_old:
        detail += f"; {result.skipped_too_old} hour(s) older than the retention left as they were"
    return result.rows, detail


def _backup(params: dict) -> Outcome:
    with backups.exclusive():
        path = backups.write_backup(now=timezone.now())
    return None, f"wrote {path.name} ({path.stat().st_size / 1e6:,.1f} MB) in {settings.BACKUP_DIR}"


def _prune(params: dict) -> Outcome:
    result = retention.prune_events(now=timezone.now())
    detail = f"deleted {result.deleted:,} event(s) older than {result.cutoff:%Y-%m-%d %H:%M} UTC"
    if result.dropped_partitions:
        detail += (
            f"; dropped {len(result.dropped_partitions)} day partition(s) of about "
            f"{result.dropped_events_estimate:,} event(s): {', '.join(result.dropped_partitions)}"
        )
    return result.deleted + result.dropped_events_estimate, detail


def _drain(params: dict) -> Outcome:
    result = tracker_services.drain_buffer()
    if not result.batches:
        return 0, "nothing to drain (the buffer was empty, or the scheduled drain held the lock)"
    detail = f"stored {result.stored:,} new event(s) of {result.claimed:,} claimed in {result.batches} batch(es)"
    if result.parked:
        detail += f"; {result.parked:,} unreadable event(s) parked again"
    return result.stored, detail


def _replay(params: dict) -> Outcome:
    moved = buffer.replay_dead_letters(limit=int(params.get("limit", 10_000)))
    result = tracker_services.drain_buffer()
    detail = f"moved {moved:,} parked event(s) back to the queue; the drain stored {result.stored:,} new event(s)"
    if result.parked:
        detail += f" and parked {result.parked:,} still unreadable one(s) again"
    return result.stored, detail


OPERATIONS: dict[str, Callable[[dict], Outcome]] = {
    TaskRun.Kind.AGGREGATE: _aggregate,
    TaskRun.Kind.BACKUP: _backup,
    TaskRun.Kind.PRUNE: _prune,
    TaskRun.Kind.DRAIN: _drain,
    TaskRun.Kind.REPLAY: _replay,
}
