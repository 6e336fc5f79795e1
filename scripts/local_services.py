"""Print shell exports for the local data stores `make run` / `make test` should use.

PostgreSQL and Redis on 127.0.0.1 are used when they answer (the database is created if
missing); otherwise nothing is exported and the product runs on its embedded default.
Explicit DATABASE_URL / REDIS_URL in the environment always win.
"""

import os
import socket
import sys

PG_HOST, PG_PORT, REDIS_PORT = "127.0.0.1", 5432, 6379


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_database(name: str) -> str | None:
    """Create the database if needed; return its URL, or None if PostgreSQL refuses us."""
    import psycopg2
    from databases import create_database_if_missing

    url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"
    try:
        create_database_if_missing(url)
    except psycopg2.Error as error:
        print(f"PostgreSQL answered but refused us: {error}".strip(), file=sys.stderr)
        return None
    return url


def main() -> None:
    if os.environ.get("EMBEDDED", "") not in {"", "0", "false"}:
        return  # `make run EMBEDDED=1`: the embedded default even where PostgreSQL and Redis answer
    database = sys.argv[1] if len(sys.argv) > 1 else "endpointstats"
    redis_db = sys.argv[2] if len(sys.argv) > 2 else "0"
    if not os.environ.get("DATABASE_URL") and reachable(PG_PORT):
        url = ensure_database(database)
        if url:
            print(f"export DATABASE_URL={url}")
    if not os.environ.get("REDIS_URL") and reachable(REDIS_PORT):
        print(f"export REDIS_URL=redis://127.0.0.1:{REDIS_PORT}/{redis_db}")


if __name__ == "__main__":
    main()
