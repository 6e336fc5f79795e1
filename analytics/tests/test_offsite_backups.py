"""Off-site backup copies on a real S3-compatible server (moto's server mode, started on loopback
by the test): every backup is copied there, and a restore starts from it once the local file is gone."""

import contextlib
import os
import shutil
import subprocess
import sys
import uuid

import boto3
import psycopg2
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from analytics import backups
from analytics.services import aggregation, tokens
from system.processes import free_port, wait_for_port

BUCKET = "endpointstats-backups"


@pytest.fixture(scope="module")
def s3_server():
    """moto_server on a free loopback port; stopped (and its data gone) after the module."""
    port = free_port()
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def offsite(settings, s3_server, tmp_path):
    """The `backups` storage as BACKUP_S3_* configure it, on a fresh bucket of the server."""
    client = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    bucket = f"{BUCKET}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "location": "endpointstats/backups",
                "endpoint_url": s3_server,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "default_acl": None,
                "file_overwrite": False,
            },
        },
    }
    return client, bucket


@pytest.fixture
def empty_database():
    name = f"es_offsite_restore_{uuid.uuid4().hex[:8]}"
    params = {k: v for k, v in connection.get_connection_params().items() if k in {"host", "port", "user", "password"}}
    with contextlib.closing(psycopg2.connect(dbname="postgres", **params)) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    url = (
        f"postgres://{params.get('user') or ''}@{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}/{name}"
    )
    yield name, params, url
    with contextlib.closing(psycopg2.connect(dbname="postgres", **params)) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_settings_configure_the_offsite_storage_from_the_environment(tmp_path):
    from tracker.tests.processes import manage

    (tmp_path / "secret").write_text("s3-secret-from-a-file\n")
    env = {
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "RUN_DIR": str(tmp_path),
        "BACKUP_S3_BUCKET": "my-bucket",
        "BACKUP_S3_ENDPOINT_URL": "https://s3.example.net",
        "BACKUP_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "BACKUP_S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "secret"),
    }
    shown = manage("shell", "-c", "from django.conf import settings; print(settings.STORAGES['backups'])", env=env)
    options = eval(shown.stdout.strip().splitlines()[-1])["OPTIONS"]  # noqa: S307 (our own repr)
    assert options["bucket_name"] == "my-bucket" and options["endpoint_url"] == "https://s3.example.net"
    assert (options["access_key"], options["secret_key"]) == ("AKIAEXAMPLE", "s3-secret-from-a-file")


@pytest.mark.django_db(transaction=True)
def test_a_backup_goes_offsite_and_a_restore_from_there_gives_every_row_back(
    offsite, store, event, empty_database, capsys
):
    client, bucket = offsite
    now = aggregation.last_complete_hour(now=timezone.now())
    store(*[event(endpoint=f"/e{i % 3}", occurred_at=now) for i in range(25)])
    tokens.create_token(name="svc")

    path = backups.write_backup(now=timezone.now())

    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"endpointstats/backups/{path.name}"]
    assert listed[0]["Size"] == path.stat().st_size
    assert backups.list_offsite_backups() == [path.name]
    shutil.rmtree(path.parent)  # the pod and its volume are gone: only the off-site copy is left

    name, params, url = empty_database
    call_command("restore", "--offsite", "latest", "--yes", f"--database-url={url}")

    with contextlib.closing(psycopg2.connect(dbname=name, **params)) as restored, restored.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT endpoint) FROM tracker_accessevent")
        assert cursor.fetchone() == (25, 3)
        cursor.execute("SELECT name FROM analytics_apitoken")
        assert cursor.fetchall() == [("svc",)]
    assert (path.parent / path.name).is_file()  # downloaded into BACKUP_DIR first


@pytest.mark.django_db(transaction=True)
def test_a_backup_that_cannot_go_offsite_fails_and_is_not_recorded_as_a_success(offsite, settings):
    settings.STORAGES["backups"]["OPTIONS"]["bucket_name"] = "no-such-bucket"
    cache.delete(backups.LAST_SUCCESS_KEY)

    with pytest.raises(backups.BackupError, match="Off-site copy of endpointstats-.* failed"):
        backups.write_backup(now=timezone.now())

    assert cache.get(backups.LAST_SUCCESS_KEY) is None
    assert len(backups.list_backups()) == 1  # the local file is kept for a retry


@pytest.mark.django_db
def test_restoring_from_offsite_says_what_is_wrong(offsite):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no off-site backup"):
        call_command("restore", "--offsite", "latest", "--yes")
    with pytest.raises(CommandError, match="not the name of a backup"):
        call_command("restore", "--offsite", "../../etc/passwd", "--yes")
    with pytest.raises(CommandError, match="not both"):
        call_command("restore", "x.dump", "--offsite", "latest", "--yes")
