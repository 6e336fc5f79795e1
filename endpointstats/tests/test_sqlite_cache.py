"""The embedded mode's shared cache (endpointstats.sqlite_cache): exact counters across processes,
so rate limits hold across every gunicorn worker and the limiter without Redis."""

import json
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from endpointstats.sqlite_cache import SQLiteCache
from tracker.tests.processes import gunicorn, http_get, manage


def count_up(location: str, times: int) -> list[int]:
    cache = SQLiteCache(location, {})
    seen = []
    for _ in range(times):
        if cache.add("hits", 1, 60):
            seen.append(1)
        else:
            seen.append(cache.incr("hits"))
    return seen


def test_concurrent_processes_each_get_a_distinct_count_and_none_is_lost(tmp_path):
    location = str(tmp_path / "cache.sqlite3")
    with ProcessPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(count_up, [location] * 6, [150] * 6))

    counts = sorted(n for result in results for n in result)
    assert counts == list(range(1, 901))
    assert SQLiteCache(location, {}).get("hits") == 900


def test_expired_entries_are_gone_and_can_be_added_again(tmp_path):
    cache = SQLiteCache(str(tmp_path / "cache.sqlite3"), {})
    cache.set("gone", {"a": 1}, 0)  # Django: a timeout of 0 expires at once
    assert cache.get("gone") is None
    assert cache.add("gone", 5, 60) is True
    assert cache.add("gone", 6, 60) is False
    assert cache.incr("gone", 2) == 7
    assert cache.get("kept", "default") == "default"
    cache.set("kept", [1, "two"], None)
    assert cache.get("kept") == [1, "two"] and cache.has_key("kept")
    assert cache.delete("kept") and not cache.has_key("kept")
    with pytest.raises(ValueError):
        cache.incr("never-set")


def test_embedded_rate_limits_are_exact_across_web_workers_and_the_limiter(tmp_path):
    # A daily window: the burst below never straddles a window edge.
    env = {
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "RUN_DIR": str(tmp_path),
        "RATE_LIMITS": json.dumps({"/": "40/d"}),
        "RATELIMIT_SHADOW": "false",
        "LIMITER_TOKEN": "test-limiter-token",
    }
    assert manage("migrate", "--no-input", env=env).returncode == 0
    with (
        gunicorn(env=env, role="web", workers=3) as (web, _),
        gunicorn(env=env, role="limiter", workers=2) as (limiter, _),
        ThreadPoolExecutor(max_workers=12) as pool,
    ):
        urls = [web + "/"] * 60 + [limiter + "/check?endpoint=/&client_ip=127.0.0.1"] * 30
        token = {"Authorization": "Bearer test-limiter-token"}  # /check wants it; web ignores it
        # Generous timeout: a cold worker imports the app on its first request, slow on a loaded machine.
        statuses = list(pool.map(lambda url: http_get(url, headers=token, timeout=60)[0], urls))

    assert statuses.count(200) == 40
    assert statuses.count(429) == 50
