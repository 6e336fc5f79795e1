"""Helpers shared by the bench_*.py scripts: the bench database, Django set-up, small statistics.

Benchmarks never write into the database that DATABASE_URL names (the developer's data):
they use a sibling database "<name>_bench", created and migrated on demand, and their own
Redis key prefix, removed at the end.
"""

import os
import socket
import statistics
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/bench_x.py`: make the project importable
    sys.path.insert(0, str(ROOT))


class BenchError(Exception):
    """The benchmark could not run or its sanity check failed (the script exits non-zero)."""


def require_env() -> tuple[str, str]:
    """DATABASE_URL (PostgreSQL) and REDIS_URL, as `make bench` sets them."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith("postgres") or not redis_url.startswith("redis"):
        raise BenchError("Set DATABASE_URL (PostgreSQL) and REDIS_URL (Redis); `make bench` does.")
    return database_url, redis_url


def bench_database_url(database_url: str) -> str:
    """The sibling bench database's URL ("<name>_bench"), created if missing."""
    import psycopg2

    url = urlparse(database_url)
    name = url.path.lstrip("/") or "endpointstats"
    bench_name = name if name.endswith("_bench") else f"{name}_bench"
    try:
        conn = psycopg2.connect(
            host=url.hostname,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname="postgres",
            connect_timeout=3,
        )
    except psycopg2.Error as error:
        raise BenchError(f"PostgreSQL at {url.hostname}:{url.port or 5432} is unreachable: {error}") from None
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [bench_name])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{bench_name}"')
    finally:
        conn.close()
    return urlunparse(url._replace(path=f"/{bench_name}"))


def migrate(database_url: str) -> None:
    """Bring the bench database to the current schema (migrations own it)."""
    env = os.environ | {"DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchError(f"migrate failed on the bench database:\n{result.stderr[-2000:]}")


def setup_django(*, database_url: str, key_prefix: str) -> None:
    """Configure Django in this process against the bench database and a private Redis key prefix."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["CACHE_KEY_PREFIX"] = key_prefix
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key")
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # this process keeps its metrics in memory
    import django

    django.setup()


def new_key_prefix(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


def delete_redis_keys(prefix: str) -> None:
    """Remove every key under a bench key prefix."""
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]
