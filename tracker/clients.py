"""Who is calling: the client address, which a client must not be able to choose."""

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest

from tracker.hotsettings import snapshot


def client_ip(request: HttpRequest) -> str | None:
    """The client's IP address.

    REMOTE_ADDR, unless TRUSTED_PROXY_COUNT proxies sit in front of the app: then the
    address that the outermost trusted proxy saw, counted from the right of
    X-Forwarded-For. Entries further left were written by the client and are ignored,
    so sending your own X-Forwarded-For changes nothing.
    """
    address = request.META.get("REMOTE_ADDR") or None
    hops = trusted_proxy_count()
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    return address if is_ip_address(address) else None


@snapshot
def trusted_proxy_count() -> int:
    return settings.TRUSTED_PROXY_COUNT


def is_ip_address(value: str | None) -> bool:
    if not value:
        return False
    return _parses(value)


@functools.lru_cache(maxsize=4096)  # once per request on the hot path; clients repeat
def _parses(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
