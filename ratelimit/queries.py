"""Reads of the rate-limit app: the rules in force and the health of the counter store."""

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from ratelimit import rules
from ratelimit.rules import RuleSet
from tracker import health


@dataclass(frozen=True)
class LimitsInForce:
    rules: RuleSet
    last_error: str | None  # why the latest rules file was rejected, if it was
    shadow: bool
    fail_open: bool
    exempt_paths: list[str]


def refusals_key(minute: int) -> str:
    """The cache key counting the refusals of one minute (Unix time // 60), cluster-wide."""
    return f"ratelimit:refusals:{minute}"


def limits_in_force() -> LimitsInForce:
    """The rules this process applies right now (after picking up a changed rules file)."""
    store = rules.store()
    return LimitsInForce(
        rules=store.current(),
        last_error=store.last_error,
        shadow=settings.RATELIMIT_SHADOW,
        fail_open=settings.RATELIMIT_FAIL_OPEN,
        exempt_paths=list(settings.RATELIMIT_EXEMPT_PATHS),
    )


def redis_status() -> str:
    """ "up", "down" or "not configured": the limiter's only dependency is the counter store."""
    return health.redis_status()


def refusals_per_minute(*, minutes: int = 5, now: float | None = None) -> list[int]:
    """Requests refused in each of the last `minutes` minutes, the running one last (one MGET).

    Raises the cache's error if it is unreachable.
    """
    current = int((time.time() if now is None else now) // 60)
    keys = [refusals_key(minute) for minute in range(current - minutes + 1, current + 1)]
    found = cache.get_many(keys)
    return [int(found.get(key) or 0) for key in keys]
