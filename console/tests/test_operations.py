"""Operations from the console: queued by the request, carried out by a real Celery worker, outcome shown."""

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from analytics import backups
from analytics.models import HourlyStat
from analytics.periods import floor_time
from console.models import TaskRun
from console.tests.conftest import park
from tracker import buffer, services
from tracker.models import AccessEvent

HOUR = timedelta(hours=1)


def run_operation(client, kind: str, data: dict | None = None) -> TaskRun:
    """POST the operation's form as an operator would, then wait for the worker to finish it."""
    response = client.post(reverse("admin:console_start_operation", args=[kind]), data or {})
    assert response.status_code == 302, response.content[:500]
    run = TaskRun.objects.latest("pk")

    assert run.kind == kind
    deadline = time.monotonic() + 120
    while run.status in {TaskRun.Status.QUEUED, TaskRun.Status.RUNNING} and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=True)
def test_each_operation_runs_in_a_worker_and_changes_data(worker, admin_client_, make_event, settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    now = timezone.now()
    hour = floor_time(now, HOUR) - 2 * HOUR

    # Aggregate a chosen range of hours: raw events become a rollup.
    services.store_events([make_event(endpoint="/agg", occurred_at=hour + timedelta(minutes=m)) for m in range(3)])
    one_hour = {"start": f"{hour:%Y-%m-%d %H:%M}", "end": f"{hour:%Y-%m-%d %H:%M}"}
    run = run_operation(admin_client_, "aggregate", one_hour)
    assert run.status == "succeeded", run.detail
    assert run.rows == 1 and run.started_at and run.finished_at and run.celery_task_id
    assert HourlyStat.objects.get(endpoint="/agg", hour=hour).access_count == 3

    # Drain now: buffered events reach PostgreSQL.
    services.record_events([make_event(endpoint="/drained", occurred_at=now) for _ in range(4)])
    run = run_operation(admin_client_, "drain")
    assert (run.status, run.rows) == ("succeeded", 4), run.detail
    assert AccessEvent.objects.filter(endpoint="/drained").count() == 4 and buffer.depth()["queued"] == 0

    # Replay dead letters: a parked readable event is stored, an unreadable one is parked again.
    park([make_event(endpoint="/replayed", occurred_at=now).to_json().encode(), b"not json"])
    page = admin_client_.get(reverse("admin:console_operations")).content.decode()
    assert "/replayed" in page and "not json" in page  # shown before replaying
    run = run_operation(admin_client_, "replay", {"limit": "10"})
    assert (run.status, run.rows) == ("succeeded", 1), run.detail
    assert AccessEvent.objects.filter(endpoint="/replayed").count() == 1
    assert buffer.dead_letters(10) == [b"not json"]

    # Prune now: events older than the retention go, recent ones stay.
    services.store_events([make_event(endpoint="/old", occurred_at=now - timedelta(days=40))])
    run = run_operation(admin_client_, "prune")
    # Deleted row by row, or with its whole day partition (when an earlier test created one).
    assert run.status == "succeeded" and ("deleted 1 event" in run.detail or "partition" in run.detail), run.detail
    assert not AccessEvent.objects.filter(endpoint="/old").exists() and AccessEvent.objects.exists()

    # Back up now: a new file, and the overview's "last backup" moves.
    run = run_operation(admin_client_, "backup")
    assert run.status == "succeeded", run.detail
    assert [p.name for p in backups.list_backups()] and run.detail.startswith("wrote endpointstats-")
    assert admin_client_.get(reverse("admin:index")).context["overview"].freshness.last_backup_at is not None

    # A failure is an outcome too, with its error.
    cache.add(backups.LOCK_KEY, "someone else", 60)
    run = run_operation(admin_client_, "backup")
    assert run.status == "failed" and "Another backup is running" in run.detail

    page = admin_client_.get(reverse("admin:console_operations")).content.decode()
    assert page.count('data-status="succeeded"') == 5 and page.count('data-status="failed"') == 1


@pytest.mark.django_db
def test_an_operation_is_only_enqueued_by_the_request(admin_client_, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client_.post(reverse("admin:console_start_operation", args=["drain"]))

    run = TaskRun.objects.get()
    assert response.status_code == 302 and run.status == "queued" and run.requested_by.username == "root"
    assert len(callbacks) == 1  # the task is sent when the transaction commits, never run here


@pytest.mark.django_db
def test_only_superusers_or_holders_of_the_permission_run_operations(staff_client, django_user_model):
    refused = staff_client.post(reverse("admin:console_start_operation", args=["prune"]))
    page = staff_client.get(reverse("admin:console_operations")).content.decode()

    assert refused.status_code == 403 and not TaskRun.objects.exists()
    assert "Only superusers" in page and 'id="op-prune"' not in page

    user = django_user_model.objects.get(username="viewer")
    from django.contrib.auth.models import Permission

    user.user_permissions.add(Permission.objects.get(codename="run_operations"))
    staff_client.force_login(user)
    assert staff_client.post(reverse("admin:console_start_operation", args=["prune"])).status_code == 302


@pytest.mark.django_db
def test_bad_operation_input_is_refused_with_the_form_errors(admin_client_):
    bad = admin_client_.post(reverse("admin:console_start_operation", args=["aggregate"]), {"start": "soon"})
    backwards = admin_client_.post(
        reverse("admin:console_start_operation", args=["aggregate"]),
        {"start": "2026-03-02 10:00", "end": "2026-03-01 10:00"},
    )
    unknown = admin_client_.post(reverse("admin:console_start_operation", args=["format-disk"]))

    assert bad.status_code == 400 and "Enter a valid date/time" in bad.content.decode()
    assert backwards.status_code == 400 and "The last hour must not be before the first" in backwards.content.decode()
    assert unknown.status_code == 404
    assert not TaskRun.objects.exists()


@pytest.mark.django_db
def test_the_schedule_is_shown_from_the_settings(admin_client_, settings):
    page = admin_client_.get(reverse("admin:console_operations")).content.decode()

    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert f'<th scope="row">{name}</th><td><code>{entry["task"]}</code></td>' in page
    assert "every 1 s" in page and "cron 5 * * * *" in page
