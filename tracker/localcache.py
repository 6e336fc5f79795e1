"""A per-process cache tier in front of the shared (Redis) cache, for the hottest reads.

An entry lives at most LOCAL_CACHE_SECONDS and never past the moment the shared entry it was
copied from expires, so a process serves nothing the shared cache would not serve, except for
up to LOCAL_CACHE_SECONDS after another process forgot the shared entry (the drain clearing
/stats): that is the price of answering without a Redis round trip, and it is bounded.
Keys carry the cache's KEY_PREFIX, so deployments (and tests) sharing a process stay apart.
Thread-safe for gthread workers: single dict operations are atomic in CPython.
"""

import time

from django.conf import settings

from tracker.hotsettings import snapshot

MAX_ENTRIES = 1000  # a handful of keys per prefix; a bound against unbounded prefixes (tests)
_entries: dict[str, tuple[float, object]] = {}


def key(name: str) -> str:
    return f"{key_prefix()}:{name}"


@snapshot
def key_prefix() -> str:
    # The default cache's KEY_PREFIX, read from the settings: the `cache` proxy costs more (asgiref's Local).
    return settings.CACHES["default"].get("KEY_PREFIX", "")


def get(name: str) -> object | None:
    """The value stored under `name` if it has not expired, else None."""
    entry = _entries.get(key(name))
    if entry is None or entry[0] <= time.time():
        return None
    return entry[1]


def put(name: str, value: object, *, shared_expires_at: float) -> None:
    """Keep `value` for LOCAL_CACHE_SECONDS, or until `shared_expires_at` (Unix time) if sooner."""
    expires_at = min(time.time() + settings.LOCAL_CACHE_SECONDS, shared_expires_at)
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[key(name)] = (expires_at, value)


def forget(name: str) -> None:
    _entries.pop(key(name), None)


def clear() -> None:
    """Forget everything (tests that need the shared cache's answer right now)."""
    _entries.clear()
