import pytest
import redis
from redis.crc import key_slot

from ratelimit import services


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7/32"),  # IPv4-mapped: the IPv4 client, not one shared /64
        (None, "unknown"),
        ("", "unknown"),
        ("not-an-ip", "unknown"),
    ],
)
def test_client_key_counts_ipv4_per_address_and_ipv6_per_64(ip, key):
    assert services.client_key(ip) == key


@pytest.mark.parametrize(("limit", "mark"), [(1, 1), (4, 4), (5, 4), (60, 48), (100, 80), (120, 96)])
def test_near_limit_mark_is_80_percent_rounded_up(limit, mark):
    assert services.near_limit_mark(limit) == mark


@pytest.mark.django_db
def test_the_counter_key_does_not_depend_on_the_limit(settings):
    settings.RATE_LIMITS = {"/k": 10}
    first = services.check_rate(endpoint="/k", client_ip="203.0.113.80")
    settings.RATE_LIMITS = {"/k": 3}
    second = services.check_rate(endpoint="/k", client_ip="203.0.113.80")
    settings.RATE_LIMITS = {"/k": "3/h"}  # another window length: a counter of its own
    third = services.check_rate(endpoint="/k", client_ip="203.0.113.80")

    assert [d.usages[0].current for d in (first, second, third)] == [1, 2, 1]


@pytest.mark.django_db
def test_a_decision_is_one_redis_round_trip_whatever_the_number_of_counters(
    settings, private_redis, client_ip_far_from_window_end
):
    settings.RATE_LIMITS = {"/b": {"rate": "100/m", "burst": "20/10s"}}
    ip = client_ip_far_from_window_end(60, 10)
    services.check_rate(endpoint="/b", client_ip=ip)  # loads the script into this Redis
    server = redis.Redis.from_url(private_redis.url)
    server.config_resetstat()

    decisions = [services.check_rate(endpoint="/b", client_ip=ip) for _ in range(10)]

    stats = server.info("commandstats")
    sent = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    sent.pop("info", None)  # this test's own questions
    sent.pop("config|resetstat", None)
    # One EVALSHA per decision; the INCRs and EXPIREs run inside it, on the server.
    assert sent.pop("evalsha") == 10
    assert set(sent) <= {"incr", "expire"}
    assert sent["incr"] == 20  # both counters, every time
    assert [[u.current for u in d.usages] for d in decisions][-1] == [11, 11]


def test_the_counters_of_one_client_share_a_redis_cluster_slot():
    keys = [
        services.counter_key(
            policy=policy, window_seconds=window, window_end=1_800_000_000, endpoint=endpoint, client="203.0.113.7/32"
        )
        for policy, window in (("endpoint", 60), ("burst", 10))
        for endpoint in ("/", "/stats", "/items/<int:pk>")
    ]

    assert len(set(keys)) == 6
    assert all("{203.0.113.7/32}" in key for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1


@pytest.mark.django_db
def test_a_connection_closed_by_redis_between_decisions_is_replaced_not_failed(settings, private_redis):
    settings.RATE_LIMITS = {"/c": 100}
    first = services.check_rate(endpoint="/c", client_ip="203.0.113.82")
    redis.Redis.from_url(private_redis.url).client_kill_filter(
        _type="normal", skipme=True
    )  # as a restart or idle timeout

    second = services.check_rate(endpoint="/c", client_ip="203.0.113.82")

    assert (first.outcome, second.outcome) == ("allowed", "allowed")
    assert second.usages[0].current in {2, 1}  # 1 only if the window turned meanwhile
