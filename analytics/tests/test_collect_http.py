"""/collect behind a real gunicorn: what only a real HTTP server shows (chunked request bodies)."""

import json
import socket

import pytest
from django.conf import settings
from django.utils import timezone

from analytics.services import tokens
from tracker import buffer
from tracker.tests.processes import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)  # gunicorn must see the committed token


@pytest.fixture
def web_role():
    db = settings.DATABASES["default"]
    env = {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],  # this test's own keys
        "ANALYTICS_COLLECT_MAX_BYTES": "4000",
    }
    with gunicorn(env=env, workers=1) as (url, _):
        yield int(url.rsplit(":", 1)[1])


def send_chunked(port: int, token: str, body: bytes, chunk: int = 100) -> tuple[int, dict]:
    """POST /collect with Transfer-Encoding: chunked (no Content-Length), as a streaming client does."""
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk]) for i in range(0, len(body), chunk)
    )
    head = (
        "POST /collect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + chunks + b"0\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def queued_endpoints() -> list[str]:
    return [json.loads(p)["endpoint"] for p in buffer.peek(1000)]


def test_a_chunked_body_is_read_whole(web_role):
    _, token = tokens.create_token(name="streaming client")
    now = timezone.now().isoformat()
    body = json.dumps([{"endpoint": f"/chunked/{i}", "timestamp": now} for i in range(5)]).encode()

    status, answer = send_chunked(web_role, token, body)

    assert (status, answer) == (201, {"status": "success", "accepted": 5})
    assert sorted(e for e in queued_endpoints() if e.startswith("/chunked/")) == [f"/chunked/{i}" for i in range(5)]


def test_a_chunked_body_over_the_size_limit_is_a_413(web_role):
    _, token = tokens.create_token(name="streaming client")
    now = timezone.now().isoformat()
    body = json.dumps([{"endpoint": f"/big/{i}", "timestamp": now} for i in range(100)]).encode()
    assert len(body) > 4000

    status, answer = send_chunked(web_role, token, body, chunk=1000)

    assert status == 413
    assert answer["message"] == "The body is over 4000 bytes: send fewer events per request."
    assert not [e for e in queued_endpoints() if e.startswith("/big/")]
