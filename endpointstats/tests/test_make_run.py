"""`make run` as a user meets it: two checkouts side by side, a dead role restarted, the admin user
created from a new shell, and the embedded mode's schedule running (scripts/run.sh, scripts/manage.sh)."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from endpointstats import paths
from system.processes import REPO, free_port, stop_process_group, wait_for_port
from tracker.tests.processes import http_get

# A new shell: none of the suite's settings leak in (no DATABASE_URL, REDIS_URL, secret key).
SHELL_ENV = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


def embedded_env(run_dir: Path, **extra: str) -> dict[str, str]:
    return {**SHELL_ENV, "EMBEDDED": "1", "RUN_DIR": str(run_dir), "SQLITE_PATH": str(run_dir / "db.sqlite3"), **extra}


@contextlib.contextmanager
def make_run(run_dir: Path, **extra: str):
    """scripts/run.sh (what `make run` runs) on the embedded default, on free ports."""
    web, limiter = free_port(), free_port()
    log = (run_dir / "run.log").open("w")
    env = embedded_env(run_dir, WEB_PORT=str(web), LIMITER_PORT=str(limiter), **extra)
    process = subprocess.Popen(
        ["scripts/run.sh"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_port(web, timeout=120, process=process)
        wait_for_port(limiter, timeout=60, process=process)
        yield f"http://127.0.0.1:{web}", f"http://127.0.0.1:{limiter}", process
    finally:
        stop_process_group(process, timeout=30)
        log.close()


def wait_until(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_what_a_running_copy_writes_derives_from_the_checkout_or_the_environment(monkeypatch):
    for name in ("RUN_DIR", "PROMETHEUS_MULTIPROC_DIR", "CELERY_HEARTBEAT_FILE", "CELERY_BEAT_SCHEDULE_FILE"):
        monkeypatch.delenv(name, raising=False)
    checkout_defaults = {
        paths.prometheus_dir(role="web"),
        paths.prometheus_dir(role="limiter"),
        paths.heartbeat_file(role="worker"),
        paths.heartbeat_file(role="beat"),
        paths.beat_schedule_file(),
    }
    assert len(checkout_defaults) == 5
    assert all(path.parent == REPO / ".run" for path in checkout_defaults)

    monkeypatch.setenv("RUN_DIR", "/srv/copy-2/run")
    assert paths.beat_schedule_file() == Path("/srv/copy-2/run/celerybeat-schedule")
    assert paths.heartbeat_file(role="beat") == Path("/srv/copy-2/run/beat.heartbeat")
    monkeypatch.setenv("CELERY_BEAT_SCHEDULE_FILE", "/var/lib/beat/schedule")
    assert paths.beat_schedule_file() == Path("/var/lib/beat/schedule")


def test_two_copies_run_side_by_side_and_a_role_that_dies_is_restarted(tmp_path):
    copy_a, copy_b = tmp_path / "a", tmp_path / "b"
    copy_a.mkdir()
    copy_b.mkdir()
    # The live aggregation every 2 s shows the embedded schedule running (beat runs each task itself).
    with (
        make_run(copy_a, ANALYTICS_LIVE_AGGREGATION_SECONDS="2", ANALYTICS_LIVE_LAG_SECONDS="0") as (
            web_a,
            limiter_a,
            __,
        ),
        make_run(copy_b) as (web_b, limiter_b, _),
    ):
        for url in (web_a, web_b):
            assert http_get(url + "/")[0] == 200
        for copy in (copy_a, copy_b):
            assert (copy / "prometheus-web").is_dir() and (copy / "prometheus-limiter").is_dir()
            wait_until(lambda copy=copy: (copy / "beat.heartbeat").exists(), timeout=60, what="beat's heartbeat")

        web_pid = int((copy_a / "web.pid").read_text())
        os.kill(web_pid, signal.SIGKILL)
        # The other roles of that copy, and the other copy, keep serving meanwhile.
        assert http_get(limiter_a + "/limits")[0] == 200
        assert http_get(web_b + "/")[0] == 200
        wait_until(lambda: (copy_a / "web.pid").read_text().strip() != str(web_pid), timeout=30, what="web restarted")
        wait_until(lambda: _answers(web_a + "/"), timeout=60, what="the restarted web answers")
        assert http_get(limiter_b + "/limits")[0] == 200

        def aggregated() -> int:
            with contextlib.closing(sqlite3.connect(copy_a / "db.sqlite3", timeout=10)) as db:
                return db.execute("SELECT coalesce(sum(access_count), 0) FROM analytics_hourlystat").fetchone()[0]

        wait_until(aggregated, timeout=60, what="beat's live aggregation wrote an hourly rollup")

    log = (copy_a / "run.log").read_text()
    assert "supervise: web exited with code -9; restarting" in log
    assert not (copy_a / "web.pid").exists()  # stopped cleanly with the rest


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


def test_the_admin_user_is_created_from_a_new_shell_with_the_settings_make_run_uses(tmp_path):
    env = embedded_env(
        tmp_path,
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
        DJANGO_SUPERUSER_PASSWORD="a-long-admin-password",
    )
    migrated = subprocess.run(["scripts/manage.sh", "migrate", "--no-input"], cwd=REPO, env=env, capture_output=True)
    assert migrated.returncode == 0, migrated.stderr
    created = subprocess.run(
        ["scripts/manage.sh", "createsuperuser", "--no-input"], cwd=REPO, env=env, capture_output=True, text=True
    )

    assert created.returncode == 0, created.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
        users = db.execute("SELECT username, is_superuser FROM auth_user").fetchall()
    assert users == [("admin", 1)]


def test_beat_creates_the_folder_of_its_schedule_file(tmp_path):
    """beat opens its schedule while starting, before any signal: a missing folder must not stop it."""
    schedule = tmp_path / "not" / "there" / "yet" / "celerybeat-schedule"
    env = {**os.environ, "CELERY_BEAT_SCHEDULE_FILE": str(schedule), "RUN_DIR": str(tmp_path / "run")}
    env.pop("ROLE", None)
    log = (tmp_path / "beat.log").open("w")
    process = subprocess.Popen(
        [str(REPO / ".venv/bin/celery"), "--app", "endpointstats", "--quiet", "beat", "--loglevel", "INFO"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: process.poll() is None and any(schedule.parent.glob(f"{schedule.name}*")),
            timeout=60,
            what=f"beat running with its schedule in {schedule.parent} (exit {process.poll()})",
        )
    finally:
        stop_process_group(process, timeout=30)
        log.close()
