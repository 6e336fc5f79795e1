"""Reads of the rate-limit app: the rules in force and the health of the counter store."""

from dataclasses import dataclass

from django.conf import settings

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
