"""A black-box client of a running stack: HTTP on loopback, SQL on the tables, nothing imported from the app.

It counts only what a user or an operator could see, so it holds whichever buffer the web role uses.
"""

import contextlib
import hashlib
import http.client
import json
import secrets
import time
from dataclasses import dataclass

from system.stack import Stack


def create_token(stack: Stack, *, name: str = "system-tests") -> str:
    """An API token for /collect, inserted as the admin would store it (SHA-256 of the token)."""
    token = "est_" + secrets.token_urlsafe(24)
    stack.sql(
        "INSERT INTO analytics_apitoken (name, token_hash, prefix, created_at) VALUES (%s, %s, %s, now())",
        (name, hashlib.sha256(token.encode()).hexdigest(), token[:10]),
    )
    return token


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    body: bytes
    headers: dict[str, str]
    seconds: float

    def json(self):
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request on a new connection (gunicorn's sync workers close each one anyway)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, data, dict(response.getheaders()), time.perf_counter() - started)
    except (OSError, http.client.HTTPException):
        return Reply(0, b"", {}, time.perf_counter() - started)
    finally:
        conn.close()


def collect_body(count: int, *, tag: str, endpoint: str = "/collected") -> bytes:
    """A /collect batch of `count` events stamped now, each with a unique user agent (tag-<i>)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps(
        [{"endpoint": endpoint, "timestamp": now, "user_agent": f"{tag}-{i}"} for i in range(count)]
    ).encode()


def post_collect(port: int, token: str, count: int, *, tag: str, timeout: float = 30.0) -> Reply:
    return request(
        port,
        "POST",
        "/collect",
        body=collect_body(count, tag=tag),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}", "User-Agent": tag},
        timeout=timeout,
    )


@dataclass(frozen=True)
class Totals:
    events: int  # rows in tracker_accessevent
    distinct_events: int  # distinct event ids (a duplicate makes events > distinct_events)
    counters: int  # sum of the per-endpoint counters
    rollups: int  # sum of HourlyStat.access_count


def totals(stack: Stack) -> Totals:
    (events, distinct), *_ = stack.sql("SELECT count(*), count(DISTINCT event_id) FROM tracker_accessevent")
    counters = stack.sql("SELECT coalesce(sum(access_count), 0) FROM tracker_endpointstat")[0][0]
    rollups = stack.sql("SELECT coalesce(sum(access_count), 0) FROM analytics_hourlystat")[0][0]
    return Totals(events=events, distinct_events=distinct, counters=int(counters), rollups=int(rollups))


def stored_user_agents(stack: Stack, *, prefix: str) -> dict[str, int]:
    """How many stored events carry each user agent starting with prefix."""
    rows = stack.sql(
        "SELECT user_agent, count(*) FROM tracker_accessevent WHERE user_agent LIKE %s GROUP BY user_agent",
        (prefix.replace("%", r"\%") + "%",),
    )
    return dict(rows)


def wait_for(condition, *, timeout: float, interval: float = 0.5):
    """Poll until condition() is truthy (returns it) or the deadline passes (returns the last value)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(interval)
    return value
