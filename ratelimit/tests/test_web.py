import json
import logging
import os
import threading
import time
from collections import Counter

import pytest
from django.test import Client
from prometheus_client import REGISTRY

pytestmark = pytest.mark.django_db


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def decisions(endpoint: str, outcome: str) -> float:
    return metric("endpointstats_ratelimit_decisions_total", endpoint=endpoint, outcome=outcome)


@pytest.mark.contract
def test_over_the_limit_the_reference_429_with_retry_after_and_rate_limit_headers(
    client, settings, client_ip_far_from_window_end
):
    settings.RATE_LIMITS = {"/": 3}
    ip = client_ip_far_from_window_end(60)
    limited_before = decisions("/", "limited")

    responses = [client.get("/", REMOTE_ADDR=ip) for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    first, refused = responses[0], responses[3]
    reset_after = int(first["RateLimit"].rsplit("t=", 1)[1])
    assert 1 <= reset_after <= 60
    assert first["RateLimit-Policy"] == '"endpoint";q=3;w=60'
    assert first["RateLimit"] == f'"endpoint";r=2;t={reset_after}'
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("3", "2")
    assert abs(int(first["X-RateLimit-Reset"]) - (time.time() + reset_after)) <= 2
    assert refused.json() == {
        "error": "Rate limit exceeded",
        "message": f"Too many requests to /: at most 3 per 60 seconds. Retry after {refused['Retry-After']} seconds.",
    }
    assert refused["Content-Type"] == "application/json"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["RateLimit"].startswith('"endpoint";r=0;t=')
    assert refused["X-RateLimit-Remaining"] == "0"
    assert decisions("/", "limited") == limited_before + 1


def test_twenty_threads_sending_300_requests_at_a_limit_of_100_get_exactly_100_through(
    settings, client_ip_far_from_window_end, redis_backend
):
    settings.RATE_LIMITS = {"/": 100}
    ip = client_ip_far_from_window_end(60, seconds=30)
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def send(count: int) -> None:
        web = Client()
        start.wait()
        for _ in range(count):
            status = web.get("/", REMOTE_ADDR=ip).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=send, args=(15,)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert Counter(statuses) == {200: 100, 429: 200}


def test_a_forged_x_forwarded_for_does_not_escape_the_limit(client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/": 2}
    settings.TRUSTED_PROXY_COUNT = 1  # one ingress proxy appends the address it saw
    ip = client_ip_far_from_window_end(60)

    statuses = [
        client.get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, {ip}").status_code for n in range(5)
    ]

    assert statuses == [200, 200, 429, 429, 429]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/": 2}
    ip = client_ip_far_from_window_end(60)

    statuses = [client.get("/", REMOTE_ADDR=ip, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}").status_code for n in range(3)]

    assert statuses == [200, 200, 429]


def test_probes_and_scrapes_are_not_limited_and_the_list_is_configurable(client, settings):
    settings.RATE_LIMITS = {"default": 1, "/metrics": 1}

    responses = [client.get(path) for path in ["/health/live"] * 3 + ["/metrics"] * 3]

    assert [r.status_code for r in responses] == [200] * 6
    assert not any(r.has_header("RateLimit") for r in responses)

    settings.RATELIMIT_EXEMPT_PATHS = ["/health"]
    assert [client.get("/metrics").status_code for _ in range(2)] == [200, 429]


def test_global_shadow_mode_counts_what_would_be_limited_and_changes_nothing(client, settings):
    settings.RATE_LIMITS = {"/": 1}
    settings.RATELIMIT_SHADOW = True
    shadow_before, allowed_before = decisions("/", "shadow"), decisions("/", "allowed")

    responses = [client.get("/", REMOTE_ADDR="203.0.113.50") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert not any(r.has_header("RateLimit") or r.has_header("X-RateLimit-Limit") for r in responses)
    assert decisions("/", "shadow") == shadow_before + 2
    assert decisions("/", "allowed") == allowed_before + 1


def test_per_endpoint_shadow_leaves_other_endpoints_enforced(client, settings):
    settings.RATE_LIMITS = {"/": {"rate": 1, "shadow": True}, "/stats": 1}

    assert [client.get("/", REMOTE_ADDR="203.0.113.51").status_code for _ in range(3)] == [200, 200, 200]
    assert [client.get("/stats", REMOTE_ADDR="203.0.113.51").status_code for _ in range(2)] == [200, 429]


@pytest.mark.contract
def test_lowering_a_limit_keeps_the_counts_of_the_current_window(client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/": 10}
    ip = client_ip_far_from_window_end(60)
    assert [client.get("/", REMOTE_ADDR=ip).status_code for _ in range(3)] == [200] * 3

    settings.RATE_LIMITS = {"/": 4}
    fourth, fifth = client.get("/", REMOTE_ADDR=ip), client.get("/", REMOTE_ADDR=ip)

    assert (fourth.status_code, fourth["X-RateLimit-Remaining"]) == (200, "0")
    assert fifth.status_code == 429

    settings.RATE_LIMITS = {"/": 100}  # raised: the difference is free at once, still the same count
    assert client.get("/", REMOTE_ADDR=ip)["X-RateLimit-Remaining"] == str(100 - 6)


def test_a_changed_rules_file_applies_to_the_next_requests_without_a_restart(
    client, settings, tmp_path, client_ip_far_from_window_end
):
    path = tmp_path / "rate-limits.json"
    path.write_text(json.dumps({"/": 50}))
    settings.RATE_LIMITS_FILE = str(path)
    settings.RATE_LIMITS_RELOAD_SECONDS = 0
    ip = client_ip_far_from_window_end(60)
    assert client.get("/", REMOTE_ADDR=ip)["X-RateLimit-Limit"] == "50"

    path.with_suffix(".new").write_text(json.dumps({"/": 2}))
    os.replace(path.with_suffix(".new"), path)

    assert [client.get("/", REMOTE_ADDR=ip).status_code for _ in range(2)] == [200, 429]

    path.with_suffix(".new").write_text('{"/": "two"}')  # a bad edit: the last good rules stay
    os.replace(path.with_suffix(".new"), path)
    refused = client.get("/", REMOTE_ADDR=ip)
    assert (refused.status_code, refused["X-RateLimit-Limit"]) == (429, "2")


def test_a_burst_window_caps_short_spikes_and_both_policies_are_advertised(
    client, settings, client_ip_far_from_window_end
):
    settings.RATE_LIMITS = {"/": {"rate": "100/m", "burst": "2/10s"}}
    ip = client_ip_far_from_window_end(60, 10, seconds=4)

    responses = [client.get("/", REMOTE_ADDR=ip) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0]["RateLimit-Policy"] == '"endpoint";q=100;w=60, "burst";q=2;w=10'
    assert responses[0]["RateLimit"].startswith('"endpoint";r=99;t=')
    assert '"burst";r=1;t=' in responses[0]["RateLimit"]
    assert responses[0]["X-RateLimit-Limit"] == "2"  # the counter closest to refusing
    assert 1 <= int(responses[2]["Retry-After"]) <= 10


def test_clients_reaching_80_percent_are_counted_once_per_window(client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/stats": 5}
    ip = client_ip_far_from_window_end(60)
    before = metric("endpointstats_ratelimit_near_limit_total", endpoint="/stats")

    for _ in range(7):
        client.get("/stats", REMOTE_ADDR=ip)

    assert metric("endpointstats_ratelimit_near_limit_total", endpoint="/stats") == before + 1


@pytest.mark.contract
def test_each_client_and_each_endpoint_has_its_own_counter(client, settings, client_ip_far_from_window_end):
    settings.RATE_LIMITS = {"/": 1, "/stats": 1}
    ip = client_ip_far_from_window_end(60)  # its two requests to / fall in one window

    assert client.get("/", REMOTE_ADDR=ip).status_code == 200
    assert client.get("/", REMOTE_ADDR="203.0.113.61").status_code == 200
    assert client.get("/stats", REMOTE_ADDR=ip).status_code == 200
    assert client.get("/", REMOTE_ADDR=ip).status_code == 429


def test_an_ipv6_client_is_counted_per_64_network(client, settings):
    settings.RATE_LIMITS = {"/": 2}

    statuses = [client.get("/", REMOTE_ADDR=f"2001:db8:1:2::{n:x}").status_code for n in range(1, 4)]

    assert statuses == [200, 200, 429]


def test_refusals_are_counted_not_logged_one_line_each(client, settings, client_ip_far_from_window_end, caplog):
    settings.RATE_LIMITS = {"/": 1}
    ip = client_ip_far_from_window_end(60)
    limited_before = decisions("/", "limited")

    with caplog.at_level(logging.WARNING, logger="django.request"):
        statuses = [client.get("/", REMOTE_ADDR=ip).status_code for _ in range(3)]
        statuses.append(client.get("/no/such/page", REMOTE_ADDR=ip).status_code)

    assert statuses == [200, 429, 429, 404]
    assert [record.status_code for record in caplog.records if record.name == "django.request"] == [404]
    assert decisions("/", "limited") == limited_before + 2
