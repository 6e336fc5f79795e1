"""A Django cache backend in one SQLite file: the embedded mode's shared cache (no server needed).

Every gunicorn worker, the limiter and beat open the same file, so the rate-limit counters, the
cached /stats and the backup lock are shared exactly as they are through Redis. Each operation is
one SQL statement in autocommit mode: SQLite runs writers one at a time, so `add` (insert unless
a live entry exists) and `incr` (`UPDATE ... SET value = value + n RETURNING value`) are atomic
across processes and concurrent requests each get a distinct count. WAL mode lets readers go on
while one process writes.

    CACHES = {"default": {"BACKEND": "endpointstats.sqlite_cache.SQLiteCache", "LOCATION": "/path/cache.sqlite3"}}
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

SCHEMA = "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value, expires REAL) WITHOUT ROWID"
LIVE = "(expires IS NULL OR expires > ?)"
PURGE_EVERY = 1000  # writes per process between removals of expired entries


class SQLiteCache(BaseCache):
    def __init__(self, location: str, params: dict) -> None:
        super().__init__(params)
        self.path = Path(location)
        self._local = threading.local()
        self._writes = 0

    # --- connection: one per thread and process (a forked worker opens its own) ----------------

    def _db(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout = 30000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")  # a cache: a power cut may lose the last writes
            connection.execute(SCHEMA)
            local.connection, local.pid = connection, os.getpid()
        return local.connection

    def _expires(self, timeout: Any) -> float | None:
        return self.get_backend_timeout(timeout)  # Django's base class: an absolute Unix time, or None

    @staticmethod
    def _encode(value: Any) -> Any:
        # Whole numbers stay SQL integers so that incr can add to them in SQL.
        return value if type(value) is int else pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def _decode(value: Any) -> Any:
        return value if isinstance(value, int) else pickle.loads(value)  # noqa: S301 (our own file)

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            self._db().execute("DELETE FROM cache WHERE expires <= ?", (time.time(),))

    # --- the cache API -------------------------------------------------------------------------

    def add(self, key: str, value: Any, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        cursor = self._db().execute(
            "INSERT INTO cache (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
            " SET value = excluded.value, expires = excluded.expires WHERE cache.expires <= ?",
            (key, self._encode(value), self._expires(timeout), time.time()),
        )
        self._wrote()
        return cursor.rowcount == 1

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        row = self._db().execute(f"SELECT value FROM cache WHERE key = ? AND {LIVE}", (key, time.time())).fetchone()
        return default if row is None else self._decode(row[0])

    def set(self, key: str, value: Any, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        key = self.make_and_validate_key(key, version=version)
        self._db().execute(
            "INSERT OR REPLACE INTO cache (key, value, expires) VALUES (?, ?, ?)",
            (key, self._encode(value), self._expires(timeout)),
        )
        self._wrote()

    def touch(self, key: str, timeout: float | None = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        cursor = self._db().execute(
            f"UPDATE cache SET expires = ? WHERE key = ? AND {LIVE}", (self._expires(timeout), key, time.time())
        )
        return cursor.rowcount == 1

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        key = self.make_and_validate_key(key, version=version)
        row = (
            self._db()
            .execute(
                f"UPDATE cache SET value = value + ? WHERE key = ? AND {LIVE} AND typeof(value) = 'integer'"
                " RETURNING value",
                (delta, key, time.time()),
            )
            .fetchone()
        )
        if row is None:
            raise ValueError(f"Key '{key}' not found.")
        return row[0]

    def delete(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return self._db().execute("DELETE FROM cache WHERE key = ?", (key,)).rowcount == 1

    def has_key(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        row = self._db().execute(f"SELECT 1 FROM cache WHERE key = ? AND {LIVE}", (key, time.time())).fetchone()
        return row is not None

    def clear(self) -> None:
        self._db().execute("DELETE FROM cache")

    def close(self, **kwargs: Any) -> None:

        pass  # one connection per thread for the life of the process; closing per request would cost a reopen
