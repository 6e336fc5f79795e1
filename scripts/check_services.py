"""Fail fast, with a message that says what to do, when the test services are unreachable."""

import os
import sys
from urllib.parse import urlparse

import psycopg2
import redis
from databases import create_database_if_missing


def main() -> int:
    problems = []
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith("postgres"):
        problems.append("DATABASE_URL must point at PostgreSQL for the tests (make test sets it).")
    else:
        url = urlparse(database_url)
        try:  # the suite's base database; pytest makes test_<name>
            create_database_if_missing(database_url)
        except psycopg2.Error as error:
            problems.append(
                f"PostgreSQL at {url.hostname}:{url.port or 5432} is unreachable ({str(error).strip()}). "
                "Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            )
    redis_url = os.environ.get("REDIS_URL", "")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except (redis.RedisError, ValueError) as error:
        problems.append(
            f"Redis at {redis_url or '(REDIS_URL unset)'} is unreachable ({error}). "
            "Start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        )
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
