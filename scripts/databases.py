"""Create a PostgreSQL database if it is missing (make run, make test and make bench need one)."""

from urllib.parse import urlparse

import psycopg2


def create_database_if_missing(database_url: str) -> None:
    """Connect to the server's `postgres` database and create the URL's database if absent.

    Raises psycopg2.Error when PostgreSQL is unreachable or refuses.
    """
    url = urlparse(database_url)
    name = url.path.lstrip("/")
    conn = psycopg2.connect(
        host=url.hostname,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname="postgres",
        connect_timeout=3,
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
