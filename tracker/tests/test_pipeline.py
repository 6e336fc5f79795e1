"""End to end over real connections: concurrent requests, Redis outages, the embedded default."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db.models import Sum

from tracker import services
from tracker.models import AccessEvent, EndpointStat
from tracker.tests.processes import http_get, private_redis


@pytest.mark.django_db(transaction=True)
def test_n_concurrent_requests_then_a_drain_give_exactly_n_events(live_server):
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
