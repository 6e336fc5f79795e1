import pytest

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
