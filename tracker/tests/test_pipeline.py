"""End to end over real connections: concurrent requests, parallel drains killed at any point, Redis
outages. The buffer's guarantees run on the standalone Redis and on a real Redis Cluster."""

import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Sum

from tracker import buffer, localcache, services
from tracker.models import AccessEvent, EndpointStat
from tracker.tests.processes import drain_process, http_get, private_redis


@pytest.mark.django_db(transaction=True)
def test_n_concurrent_requests_then_a_drain_give_exactly_n_events(live_server, redis_backend):
    paths = ["/", "/stats", "/nowhere"] * 100  # 300 requests from 16 threads
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda path: http_get(live_server.url + path)[0], paths))
    assert statuses.count(200) == 200 and statuses.count(404) == 100

    services.drain_buffer()

    assert AccessEvent.objects.count() == 300
    assert EndpointStat.objects.aggregate(total=Sum("access_count"))["total"] == 300
    assert dict(EndpointStat.objects.values_list("endpoint", "access_count")) == {
        "/": 100,
        "/stats": 100,
        "<unmatched>": 100,
    }


@pytest.mark.django_db(transaction=True)
def test_with_redis_gone_requests_are_served_and_no_event_is_lost(live_server, settings):
    with private_redis() as (port, redis_process):
        caches = {alias: dict(config) for alias, config in settings.CACHES.items()}
        caches["default"]["LOCATION"] = f"redis://127.0.0.1:{port}/0"
        settings.CACHES = caches
        settings.REDIS_URL = caches["default"]["LOCATION"]

        for _ in range(5):
            assert http_get(live_server.url + "/")[0] == 200
        services.drain_buffer()  # the five buffered events reach PostgreSQL

        redis_process.kill()
        redis_process.wait()
        # The greeting is also kept for LOCAL_CACHE_SECONDS in this (live server) process; past
        # that, Redis is asked again. Skip the wait: the outage is what this test is about.
        localcache.clear()
        responses = [http_get(live_server.url + "/") for _ in range(20)]
        stats = http_get(live_server.url + "/stats")
        health = http_get(live_server.url + "/health")

    assert [status for status, _ in responses] == [200] * 20
    assert all(json.loads(body)["from_cache"] is False for _, body in responses)
    assert stats[0] == 200
    assert health[0] == 503 and json.loads(health[1])["redis"] == "down"
    # 5 drained before the outage + 20 stored directly during it + the /stats request.
    assert EndpointStat.objects.get(endpoint="/").access_count == 25
    assert AccessEvent.objects.filter(endpoint="/").count() == 25
    assert EndpointStat.objects.get(endpoint="/stats").access_count == 1


def _drain_env() -> dict[str, str]:
    """The environment of a drain process: this test's database, Redis (or cluster) and key prefix."""
    db = connection.settings_dict
    cache = django_settings.CACHES["default"]
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    env = {
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": cache["LOCATION"],
        "CACHE_KEY_PREFIX": cache["KEY_PREFIX"],
        "BUFFER_SHARDS": str(django_settings.BUFFER_SHARDS),
        "DRAIN_BATCH_SIZE": "300",
        # Killed drains' locks expire and their events are taken over within a second or two.
        "DRAIN_LOCK_SECONDS": "1",
        "DRAIN_CLAIM_IDLE_SECONDS": "1",
    }
    if django_settings.REDIS_CLUSTER:
        env |= {"REDIS_CLUSTER": "true", "CELERY_BROKER_URL": os.environ["REDIS_URL"]}
    return env


@pytest.mark.django_db(transaction=True)
def test_parallel_drains_killed_at_any_point_lose_nothing_and_count_nothing_twice(make_event, redis_backend):
    events_per_shard, endpoints = 3000, [f"/e{i}" for i in range(8)]
    t0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    expected: dict[str, int] = dict.fromkeys(endpoints, 0)
    for shard in range(django_settings.BUFFER_SHARDS):
        events = [
            make_event(endpoint=endpoints[i % 8], occurred_at=t0 + timedelta(milliseconds=i), client_ip=None)
            for i in range(events_per_shard)
        ]
        for event in events:
            expected[event.endpoint] += 1
        buffer.push([event.to_json() for event in events], shard=shard)
    total = sum(expected.values())
    env = _drain_env()
    rng = random.Random(8)  # noqa: S311 (kill timing, not security)
    drains = [drain_process(env=env) for _ in range(3)]
    everything = list(drains)
    pending_after_kills = []
    try:
        # Kill the longest-running drain five times, each time once storing has progressed, at a random
        # moment (reading, storing, committing or acknowledging), and start a fresh one in its place.
        stored = 0
        while len(pending_after_kills) < 5 and stored < total:
            deadline = time.monotonic() + 60
            while (now_stored := AccessEvent.objects.count()) == stored and time.monotonic() < deadline:
                time.sleep(0.01)
            stored = now_stored
            time.sleep(rng.uniform(0, 0.1))
            victim = drains.pop(0)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            pending_after_kills.append(buffer.depth()["pending"])
            drains.append(drain_process(env=env))
            everything.append(drains[-1])
        for drain in drains:
            assert drain.wait(timeout=120) == 0, _output(drain)
    finally:
        for process in everything:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.output.close()

    assert len(pending_after_kills) >= 3 and any(pending_after_kills)  # kills landed mid-batch
    assert AccessEvent.objects.count() == total
    assert dict(EndpointStat.objects.values_list("endpoint", "access_count")) == expected
    assert buffer.depth() == {"queued": 0, "pending": 0, "dead": 0}


def _output(process) -> str:
    process.output.seek(0)
    return process.output.read()[-3000:]


@pytest.mark.django_db(transaction=True)
def test_two_drains_admitting_new_endpoints_at_once_do_not_overshoot_the_cap(make_event, settings):
    settings.TRACKING_MAX_ENDPOINTS = 4
    batches = [[make_event(endpoint=f"/{name}{i}") for i in range(4) for _ in range(200)] for name in "ab"]
    start = threading.Barrier(2)
    errors = []

    def drain(events) -> None:
        try:
            start.wait()
            services.store_events(events)
        except Exception as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=drain, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    counts = dict(EndpointStat.objects.values_list("endpoint", "access_count"))
    assert len(set(counts) - {settings.TRACKING_OVERFLOW_ENDPOINT}) == 4
    assert counts[settings.TRACKING_OVERFLOW_ENDPOINT] == 800
    assert sum(counts.values()) == 1600
