"""Logs a cluster can use: JSON lines with role, pod and request id (LOG_FORMAT=json), and the
request id returned in X-Request-ID (the ingress's when it sends a sane one)."""

import json
import re
import urllib.request

import pytest
from django.test import Client

from tracker.tests.processes import gunicorn, manage


def test_every_response_carries_a_new_request_id():
    first, second = Client().get("/health/live"), Client().get("/does/not/exist")

    assert re.fullmatch(r"[0-9a-f]{32}", first["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_the_ingress_request_id_is_kept():
    response = Client().get("/health/live", HTTP_X_REQUEST_ID="3f2a9c1e-7b4d-4e8a-9c1f-0123456789ab")

    assert response["X-Request-ID"] == "3f2a9c1e-7b4d-4e8a-9c1f-0123456789ab"


@pytest.mark.parametrize("bad", ["two words", "x" * 129, "evil\u001b[31m", "a;b", ""])
def test_a_request_id_that_is_not_a_plain_token_is_replaced(bad):
    response = Client().get("/health/live", HTTP_X_REQUEST_ID=bad)

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_json_lines_carry_the_role_the_pod_and_the_request_id(tmp_path):
    env = {
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "LOG_FORMAT": "json",
        "POD_NAME": "web-7d9f-abc12",
        "GUNICORN_ACCESS_LOG": "true",
    }
    assert manage("migrate", "--no-input", env=env).returncode == 0
    with gunicorn(env=env, workers=1) as (url, process):
        request = urllib.request.Request(url + "/no/such/page", headers={"X-Request-ID": "req-42.abc"})  # noqa: S310
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 (loopback)
        except urllib.error.HTTPError as error:
            assert error.code == 404
            assert error.headers["X-Request-ID"] == "req-42.abc"
    output = process.stdout.read().decode()

    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    assert lines
    assert all(line["role"] == "web" and line["pod"] == "web-7d9f-abc12" for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    of_the_request = [line for line in lines if line.get("request_id") == "req-42.abc"]
    loggers = {line["logger"] for line in of_the_request}
    assert {"django.request", "gunicorn.access"} <= loggers, lines
    (access,) = [line for line in of_the_request if line["logger"] == "gunicorn.access"]
    assert (access["method"], access["path"], access["status"]) == ("GET", "/no/such/page", "404")
