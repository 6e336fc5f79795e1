"""Slow clients with direct exposure: gunicorn's threads (GUNICORN_THREADS) keep web answering."""

import contextlib
import socket

import pytest
from django.conf import settings

from tracker.tests.processes import gunicorn, http_get, suite_database_url


@contextlib.contextmanager
def slow_clients(url: str, count: int):
    """Sockets that send the start of a request's headers and then nothing (a slowloris)."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow")
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.usefixtures("django_db_setup")  # this worker's test database exists before the role connects
@pytest.mark.parametrize("role", ["web", "limiter"])
def test_two_slow_clients_do_not_stop_a_role_with_threads(role):
    env = {
        "DATABASE_URL": suite_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "GUNICORN_THREADS": "4",  # the documented setting for direct exposure
    }
    with gunicorn(env=env, role=role, workers=2) as (url, _):
        for _ in range(4):  # both workers have booted (loading Django takes seconds on a busy machine)
            assert http_get(url + "/health/live", timeout=60)[0] == 200
        with slow_clients(url, 2):
            # Each answer must come within the client's 5 s: with sync workers (GUNICORN_THREADS=1) two
            # slow clients hold both workers until gunicorn's 30 s timeout and every one of these times out.
            statuses = [http_get(url + "/health/live", timeout=5)[0] for _ in range(6)]

    assert statuses == [200] * 6
