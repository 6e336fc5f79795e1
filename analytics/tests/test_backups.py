import contextlib
import os
import sqlite3
import time

import psycopg2
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone

from analytics import backups, tasks
from analytics.models import HourlyStat
from analytics.services import aggregation, tokens

# Per process: helpers running the suite at once on one server must not drop each other's scratch database.
SCRATCH = f"es_analytics_restore_scratch_{os.getpid()}"


@pytest.fixture
def backup_dir(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "backups"
    return settings.BACKUP_DIR


@pytest.fixture
def scratch_database():
    """A separate, empty database to restore into (never the test or shared databases)."""
    params = {k: v for k, v in connection.get_connection_params().items() if k in {"host", "port", "user", "password"}}
    admin = psycopg2.connect(dbname="postgres", **params)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        cursor.execute(f"CREATE DATABASE {SCRATCH}")
    settings_dict = dict(connection.settings_dict, NAME=SCRATCH)
    yield settings_dict, params
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
    admin.close()


def _all_rows(conn) -> dict[str, list]:
    with conn.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        tables = [name for (name,) in cursor.fetchall()]
        rows = {}
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            rows[table] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cursor]
    return rows


@pytest.mark.django_db(transaction=True)
def test_backup_then_restore_into_an_empty_database_gives_every_row_back(
    store, event, backup_dir, scratch_database, capsys
):
    now = aggregation.last_complete_hour(now=timezone.now())
    store(*[event(endpoint=f"/e{i % 4}", occurred_at=now + i * (now - now.replace(minute=0))) for i in range(40)])
    aggregation.aggregate_hour(hour=now, now=timezone.now())
    tokens.create_token(name="svc")
    assert HourlyStat.objects.exists()
    _, params = scratch_database
    with contextlib.closing(psycopg2.connect(dbname=connection.settings_dict["NAME"], **params)) as conn:
        source = _all_rows(conn)  # read the same way as the restored copy (Django decodes jsonb differently)

    call_command("backup")
    out, err = capsys.readouterr()
    path = out.strip()
    assert os.path.basename(path).startswith("endpointstats-") and path.endswith(".dump")
    assert "/" in err and "]" in err  # progress: [done/total] table

    database, _ = scratch_database
    call_command(
        "restore",
        path,
        "--yes",
        f"--database-url=postgres://{params.get('user') or ''}@"
        f"{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}/{SCRATCH}",
    )
    with contextlib.closing(psycopg2.connect(dbname=SCRATCH, **params)) as restored:
        assert _all_rows(restored) == source
    assert source["tracker_accessevent"] and source["analytics_apitoken"]

    with pytest.raises(backups.BackupError, match="not empty"):  # a second restore would mix two states
        backups.restore_backup(path=backups.Path(path), database=database)


def test_restore_refuses_without_yes(backup_dir, tmp_path):
    with pytest.raises(CommandError, match="--yes"):
        call_command("restore", str(tmp_path / "x.dump"))


def test_restore_of_a_missing_file_says_so(db):
    with pytest.raises(CommandError, match="No backup file"):
        call_command("restore", "/nonexistent/endpointstats.dump", "--yes")


def test_only_the_newest_backups_are_kept(backup_dir, settings):
    backup_dir.mkdir(parents=True)
    for i in range(5):
        path = backup_dir / f"endpointstats-2026010{i + 1}T000000Z.dump"
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    (backup_dir / "endpointstats-20260109T000000Z.dump.partial").write_bytes(b"x")

    removed = backups.remove_old_backups(keep=2)

    assert sorted(p.name for p in removed) == [f"endpointstats-2026010{i}T000000Z.dump" for i in (1, 2, 3)]
    assert [p.name for p in backups.list_backups()] == [
        "endpointstats-20260105T000000Z.dump",
        "endpointstats-20260104T000000Z.dump",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_task_backs_up_once_and_skips_while_another_runs(backup_dir):
    with backups.exclusive():
        assert tasks.backup_database_task() == ""
    path = tasks.backup_database_task()

    assert path.endswith(".dump") and os.path.getsize(path) > 0
    body = Client().get("/metrics").content.decode()
    line = next(x for x in body.splitlines() if x.startswith("endpointstats_backup_last_success_timestamp_seconds"))
    assert abs(float(line.split()[-1]) - os.path.getmtime(path)) < 1


def test_sqlite_is_backed_up_and_restored_with_its_online_backup_api(tmp_path):
    source = tmp_path / "db.sqlite3"
    with contextlib.closing(sqlite3.connect(source)) as conn:
        conn.execute("CREATE TABLE t (id integer primary key, name text)")
        conn.executemany("INSERT INTO t (name) VALUES (?)", [(f"row{i}",) for i in range(5000)])
        conn.commit()
    copy = tmp_path / "endpointstats-20260101T000000Z.sqlite3"
    calls = []
    backups._sqlite_copy(source, copy, lambda done, total, what: calls.append((done, total)))
    target = tmp_path / "restored.sqlite3"

    backups.restore_backup(path=copy, database={"ENGINE": "django.db.backends.sqlite3", "NAME": str(target)})

    with contextlib.closing(sqlite3.connect(target)) as conn:
        assert conn.execute("SELECT count(*), max(name) FROM t").fetchone() == (5000, "row999")
    assert calls and calls[-1][0] == calls[-1][1]
    with pytest.raises(backups.BackupError, match="not empty"):
        backups.restore_backup(path=copy, database={"ENGINE": "django.db.backends.sqlite3", "NAME": str(target)})
