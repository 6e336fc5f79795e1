"""tracker.geo: countries looked up offline, and what of an address is kept."""

import pytest

from tracker import geo


def test_countries_are_looked_up_offline_and_private_addresses_have_none():
    addresses = ["81.2.69.160", "8.8.8.8", "2001:4860:4860::8888", "10.1.2.3", "127.0.0.1", "::1", None, "junk"]

    assert geo.countries(addresses) == ["GB", "US", "US", "", "", "", "", ""]


@pytest.mark.parametrize(
    ("address", "stored"),
    [("81.2.69.160", "81.2.69.0"), ("2001:4860:4860::8888", "2001:4860:4860::"), (None, None)],
)
def test_truncation_keeps_the_ipv4_24_and_the_ipv6_48(settings, address, stored):
    settings.ANALYTICS_CLIENT_IP_PRIVACY = "truncate"

    assert geo.protect(address) == stored


def test_hashing_is_keyed_stable_and_keeps_clients_apart(settings):
    settings.ANALYTICS_CLIENT_IP_PRIVACY = "hash"
    settings.ANALYTICS_CLIENT_IP_HASH_KEY = "k1"
    first, again, other = geo.protect("81.2.69.160"), geo.protect("81.2.69.160"), geo.protect("81.2.69.161")
    settings.ANALYTICS_CLIENT_IP_HASH_KEY = "k2"

    assert first == again != other
    assert first.startswith("fd") and "81.2.69" not in first
    assert geo.protect("81.2.69.160") != first
