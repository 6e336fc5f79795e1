"""Country of a client address, and what of the address is kept (privacy), both at drain time.

The country is looked up offline: the iptocc package ships its data, or a MaxMind
GeoLite2/GeoIP2 country database is used when GEOIP_PATH is set (Django's convention).
Private, loopback, reserved and documentation addresses have no country.
"""

import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import iptocc
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def countries(addresses: Sequence[str | None]) -> list[str]:
    """ISO 3166-1 alpha-2 code for each address, '' where unknown or not a public address."""
    out = [""] * len(addresses)
    public = [(i, a) for i, a in enumerate(addresses) if a and _is_public(a)]
    if not public:
        return out
    reader = _maxmind_reader()
    if reader is not None:
        for i, address in public:
            out[i] = _maxmind_country(reader, address)
    else:
        for (i, _), code in zip(public, iptocc.country_code([a for _, a in public]), strict=True):
            out[i] = code or ""
    return out


def protect(address: str | None) -> str | None:
    """The address as stored, by ANALYTICS_CLIENT_IP_PRIVACY.

    none: unchanged. truncate: IPv4 /24, IPv6 /48 (the network address). hash: a keyed
    HMAC-SHA256 mapped into the IPv6 unique-local range fd00::/8, so it still fits the
    inet column and still tells clients apart for unique-client counts, but cannot be
    reversed without ANALYTICS_CLIENT_IP_HASH_KEY.
    """
    mode = settings.ANALYTICS_CLIENT_IP_PRIVACY
    if not address or mode == "none":
        return address
    ip = ipaddress.ip_address(address)
    if mode == "truncate":
        prefix = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
    digest = hmac.new(settings.ANALYTICS_CLIENT_IP_HASH_KEY.encode(), ip.packed, hashlib.sha256).digest()
    return str(ipaddress.IPv6Address(b"\xfd" + digest[:15]))


def _is_public(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


@functools.cache
def _maxmind_reader() -> Any:  # a geoip2.database.Reader (an optional package) or None
    path = settings.GEOIP_PATH
    if not path:
        return None
    try:
        import geoip2.database
    except ImportError:
        raise ImproperlyConfigured("GEOIP_PATH is set: install the geoip2 package to read it.") from None
    file = Path(path)
    if file.is_dir():
        file = file / settings.GEOIP_COUNTRY
    return geoip2.database.Reader(str(file))


def _maxmind_country(reader: Any, address: str) -> str:
    try:
        return reader.country(address).country.iso_code or ""
    except Exception:  # noqa: BLE001 - an address missing from the database has no country
        return ""
