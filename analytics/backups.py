"""Database backups: pg_dump custom format on PostgreSQL, SQLite's online backup API otherwise.

Files are written as <name>.partial and renamed when complete, so a crashed backup is never
mistaken for a good one; the newest BACKUP_KEEP complete files are kept. With BACKUP_S3_BUCKET
set, each complete file is also copied off-site (S3-compatible object storage, through
django-storages: the `backups` storage) before the backup counts as a success, and a restore can
start from an off-site copy when the local one is gone with its volume.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
from django.conf import settings
from django.core.cache import cache
from django.db import connections
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from django.core.files.storage import Storage

Progress = Callable[[int, int, str], None]  # (done, total, what)
LAST_SUCCESS_KEY = "analytics:backup:last-success"
LOCK_KEY = "analytics:backup:lock"
PATTERN = re.compile(r"^endpointstats-\d{8}T\d{6}Z(-\d+)?\.(dump|sqlite3)$")


class BackupError(RuntimeError):
    """A backup or restore could not be done; the message says why and what to do."""


class BackupAlreadyRunning(BackupError):
    pass


@contextlib.contextmanager
def exclusive(*, timeout_seconds: int = 6 * 3600) -> Iterator[None]:
    """One backup at a time across workers (a cache lock; expires if its holder dies)."""
    if not cache.add(LOCK_KEY, os.getpid(), timeout_seconds):
        raise BackupAlreadyRunning("Another backup is running.")
    try:
        yield
    finally:
        with contextlib.suppress(RedisError):
            cache.delete(LOCK_KEY)


def write_backup(*, now: datetime, using: str = "default", progress: Progress | None = None) -> Path:
    """Back up the database into BACKUP_DIR and return the new file; keeps the newest BACKUP_KEEP.

    PostgreSQL: `pg_dump --format=custom` (consistent snapshot, no locks beyond ACCESS SHARE).
    SQLite: the online backup API, page by page, while the database stays usable.
    Raises BackupError (nothing left behind) if it fails.
    """
    folder = Path(settings.BACKUP_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    db = connections[using].settings_dict
    is_postgres = connections[using].vendor == "postgresql"
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    suffix = "dump" if is_postgres else "sqlite3"
    target = folder / f"endpointstats-{stamp}.{suffix}"
    n = 1
    while target.exists():
        target = folder / f"endpointstats-{stamp}-{n}.{suffix}"
        n += 1
    partial = target.with_name(target.name + ".partial")
    try:
        if is_postgres:
            _pg_dump(db, partial, progress)
        else:
            _sqlite_copy(Path(db["NAME"]), partial, progress)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if offsite_enabled():
        upload_backup(path=target)  # raises BackupError: not a success until it is off-site too
    with contextlib.suppress(RedisError):
        cache.set(LAST_SUCCESS_KEY, target.stat().st_mtime, None)
    remove_old_backups(keep=settings.BACKUP_KEEP)
    return target


def list_backups() -> list[Path]:
    """Complete backups in BACKUP_DIR, newest first."""
    folder = Path(settings.BACKUP_DIR)
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and PATTERN.match(p.name)]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


def remove_old_backups(*, keep: int) -> list[Path]:
    removed = list_backups()[max(keep, 1) :]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def last_success_timestamp() -> float | None:
    """Unix time of the newest successful backup: recorded in the cache by the worker that made
    it (so web pods without the backup volume know it), else the newest file's mtime."""
    with contextlib.suppress(RedisError):
        value = cache.get(LAST_SUCCESS_KEY)
        if value is not None:
            return float(value)
    files = list_backups()
    return files[0].stat().st_mtime if files else None


def restore_backup(*, path: Path, database: Mapping[str, Any], progress: Progress | None = None) -> None:
    """Restore a backup into `database` (a Django DATABASES entry), which must be empty.

    Raises BackupError if the file is missing, of the wrong kind, or the database already
    holds tables (restoring over data would mix two states; drop and recreate it first).
    """
    if not path.is_file():
        raise BackupError(f"No backup file at {path}.")
    is_postgres = "postgresql" in database["ENGINE"]
    if is_postgres != (path.suffix == ".dump"):
        raise BackupError(f"{path.name} is not a backup of this kind of database ({database['ENGINE']}).")
    if is_postgres:
        _pg_restore(database, path, progress)
    else:
        _sqlite_restore(path, Path(database["NAME"]), progress)


# --- Off-site copies ---------------------------------------------------------------------------


def offsite_enabled() -> bool:
    """An off-site storage is configured (BACKUP_S3_BUCKET)."""
    return "backups" in settings.STORAGES


def _offsite() -> Storage:
    from django.core.files.storage import storages

    return storages["backups"]


def upload_backup(*, path: Path) -> str:
    """Copy a complete backup to the off-site storage under its own name and return that name.

    Raises BackupError if the storage refuses it (the local file is kept).
    """
    from botocore.exceptions import BotoCoreError, ClientError
    from django.core.files import File

    try:
        with path.open("rb") as handle:
            return _offsite().save(path.name, File(handle, name=path.name))
    except (BotoCoreError, ClientError, OSError) as error:
        raise BackupError(f"Off-site copy of {path.name} failed: {error}") from None


def list_offsite_backups() -> list[str]:
    """Names of the off-site backups, newest first (names sort by their UTC timestamp)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _, files = _offsite().listdir("")
    except (BotoCoreError, ClientError) as error:
        raise BackupError(f"Cannot list the off-site backups: {error}") from None
    return sorted((name for name in files if PATTERN.match(name)), reverse=True)


def fetch_offsite_backup(*, name: str, folder: Path) -> Path:
    """Download an off-site backup (`latest` for the newest) into `folder`; returns the local file.

    Written as .partial and renamed when complete. Raises BackupError if there is none or it fails.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if not offsite_enabled():
        raise BackupError("No off-site storage is configured: set BACKUP_S3_BUCKET (docs/OPERATIONS.md).")
    if name == "latest":
        names = list_offsite_backups()
        if not names:
            raise BackupError("There is no off-site backup.")
        name = names[0]
    if not PATTERN.match(name):
        raise BackupError(f"{name} is not the name of a backup (endpointstats-<UTC time>.dump or .sqlite3).")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    partial = target.with_name(name + ".partial")
    try:
        with _offsite().open(name, "rb") as source, partial.open("wb") as sink:
            while chunk := source.read(1024 * 1024):
                sink.write(chunk)
        os.replace(partial, target)
    except (BotoCoreError, ClientError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise BackupError(f"Cannot download the off-site backup {name}: {error}") from None
    return target


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_env(db: Mapping[str, Any]) -> dict:
    env = dict(os.environ)
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if db.get(key):
            env[var] = str(db[key])
    env["PGDATABASE"] = db["NAME"]
    return env


def _pg_connect(db: Mapping[str, Any]) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        dbname=db["NAME"],
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        connect_timeout=5,
    )


def _pg_table_count(db: Mapping[str, Any]) -> int:
    with contextlib.closing(_pg_connect(db)) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
        row = cursor.fetchone()
    assert row is not None  # count(*) always answers one row
    return int(row[0])


def _run_with_progress(command: list[str], env: dict, marker: str, total: int, progress: Progress | None) -> None:
    """Run pg_dump/pg_restore --verbose, turning its per-table lines into progress calls."""
    try:
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    except FileNotFoundError:
        raise BackupError(f"{command[0]} is not installed: install the PostgreSQL client tools.") from None
    done = 0
    tail: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:
        tail = (tail + [line.rstrip()])[-20:]
        match = re.search(marker + r' "?([^"]+)"?', line)
        if match:
            done += 1
            if progress:
                progress(min(done, total), total, match.group(1).strip())
    if process.wait() != 0:
        errors = [line for line in tail if "error" in line.lower()] or tail[-3:]
        raise BackupError(f"{command[0]} failed: " + " | ".join(errors))


def _pg_dump(db: Mapping[str, Any], target: Path, progress: Progress | None) -> None:
    total = _pg_table_count(db)
    command = ["pg_dump", "--format=custom", "--verbose", "--no-owner", "--file", str(target)]
    _run_with_progress(command, _pg_env(db), "dumping contents of table", total, progress)


def _pg_restore(db: Mapping[str, Any], path: Path, progress: Progress | None) -> None:
    try:
        tables = _pg_table_count(db)
    except psycopg2.Error as error:
        raise BackupError(f"Cannot connect to database {db['NAME']}: {error}".strip()) from None
    if tables:
        raise BackupError(
            f"Database {db['NAME']} is not empty ({tables} tables): restore only into an empty database "
            "(drop and recreate it, or use --database-url to pick another)."
        )
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise BackupError(f"{path.name} is not a pg_dump custom-format file: {listing.stderr.strip()}")
    total = sum(1 for line in listing.stdout.splitlines() if " TABLE DATA " in line)
    command = ["pg_restore", "--verbose", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
    _run_with_progress(
        command + ["--dbname", db["NAME"], str(path)], _pg_env(db), "processing data for table", total, progress
    )


# --- SQLite -----------------------------------------------------------------------------------


def _sqlite_copy(source: Path, target: Path, progress: Progress | None) -> None:
    def report(status: int, remaining: int, total: int) -> None:
        if progress and total:
            progress(total - remaining, total, "pages")

    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst, pages=256, progress=report, sleep=0.005)


def _sqlite_restore(path: Path, target: Path, progress: Progress | None) -> None:
    with contextlib.closing(sqlite3.connect(target)) as dst:
        tables = dst.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    if tables:
        raise BackupError(f"Database {target} is not empty ({tables} tables): restore only into an empty database.")
    _sqlite_copy(path, target, progress)
