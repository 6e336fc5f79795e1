"""Rate-limit decisions, shared by the web role's middleware and the limiter role's /check.

Counting is django-ratelimit's core (`get_usage`) on the default cache (django-redis), so every
replica of both roles shares the counters. Each counter is one Redis key per (endpoint, policy,
client, window): `SET NX` creates it with the first request of a window and an atomic `INCR`
counts every later one, so concurrent requests each get a distinct count and exactly `limit`
of them are admitted. A decision costs one Redis round trip for the first request of a window
and two after that (per policy: a rule with a burst window counts in two counters).

The key scheme (what web and limiter must agree on):
    group  = "endpointstats:<policy>:<endpoint>"   policy "endpoint" or "burst", endpoint the route
    value  = client_key(ip)                         "203.0.113.7/32", IPv6 per /64 network
    rate   = (0, window_seconds)                    see COUNTER_RATE_COUNT below
    key    = cache.make_key("rl:" + sha256(group + "0/<window>s" + value + <window end>))
django-ratelimit puts the rate into the key; passing a constant count keeps the limit out of it,
so changing a limit keeps every client's count in the current window (a lowered limit applies at
once, a raised one frees the difference). Changing a window's length starts new counters.
"""

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django_ratelimit.core import get_usage
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from ratelimit import rules as rules_module
from ratelimit.metrics import DECISIONS, NEAR_LIMIT
from ratelimit.rules import Rate, Rule

logger = logging.getLogger(__name__)

ALLOWED, LIMITED, SHADOW, ERROR = "allowed", "limited", "shadow", "error"
# django-ratelimit builds its cache key from the rate's count and window. The count is always 0
# here, so the key holds the window but not the limit; we compare the count with the limit ourselves.
COUNTER_RATE_COUNT = 0
NEAR_LIMIT_FRACTION = 0.8
UNKNOWN_CLIENT = "unknown"  # no usable address (misconfigured proxy set-up): such requests share one counter
OTHER_ENDPOINT = "<other>"  # metric label for /check endpoints without a rule (callers choose those names)
# After a Redis failure, do not try Redis for this long: a dead Redis then costs a request nothing.
REDIS_RETRY_AFTER_SECONDS = 1.0
_redis_retry_at = 0.0


@dataclass(frozen=True)
class Usage:
    """One counter after this request: the policy, its limit and window, the count so far."""

    policy: str
    limit: int
    window_seconds: int
    current: int  # requests counted in this window, this one and refused ones included
    reset_after: int  # whole seconds (rounded up) until this window ends and the count starts again

    @property
    def exceeded(self) -> bool:
        return self.current > self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.current)


@dataclass(frozen=True)
class Decision:
    """What to do with one request, and the counts behind it (no counts when outcome is "error")."""

    endpoint: str
    client: str
    rule: Rule
    outcome: str  # allowed | limited | shadow | error
    allowed: bool
    usages: tuple[Usage, ...] = ()
    shadow: bool = False  # a dry run applies to this endpoint (globally or by its rule)

    @property
    def binding(self) -> Usage | None:
        """The counter to report: a refusing one (the longest wait), else the one with the least left."""
        if not self.usages:
            return None
        exceeded = [usage for usage in self.usages if usage.exceeded]
        if exceeded:
            return max(exceeded, key=lambda usage: usage.reset_after)
        return min(self.usages, key=lambda usage: (usage.remaining, -usage.reset_after))

    @property
    def retry_after(self) -> int:
        """Seconds until every exceeded counter has started a new window (1 when the counters are unknown)."""
        return max((usage.reset_after for usage in self.usages if usage.exceeded), default=1)


def client_key(ip: str | None) -> str:
    """The counter identity of a client address: the address (IPv4) or its /64 network (IPv6).

    An IPv6 host usually owns a whole /64, so counting single addresses would let it rotate
    out of its limit. IPv4-mapped IPv6 addresses count as the IPv4 address. Masks follow
    django-ratelimit's RATELIMIT_IPV4_MASK / RATELIMIT_IPV6_MASK settings.
    """
    if not ip:
        return UNKNOWN_CLIENT
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN_CLIENT
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.version == 4:
        mask = getattr(settings, "RATELIMIT_IPV4_MASK", 32)
    else:
        mask = getattr(settings, "RATELIMIT_IPV6_MASK", 64)
    return str(ipaddress.ip_network(f"{address}/{mask}", strict=False))


def check_rate(*, endpoint: str, client_ip: str | None, bounded_endpoint: bool = True) -> Decision:
    """Count one request by `client_ip` to `endpoint` and decide whether it may proceed.

    Every call counts, refused ones included. Exact under concurrency (atomic Redis INCR).
    Never raises for an unreachable Redis: the decision's outcome is then "error" and `allowed`
    follows RATELIMIT_FAIL_OPEN (shadow mode never refuses). Shadow mode (RATELIMIT_SHADOW or
    the rule's "shadow") turns "limited" into "shadow" and allows the request.
    `bounded_endpoint=False` (names chosen by callers of /check) labels metrics of endpoints
    without a rule as "<other>".
    """
    rules = rules_module.current_rules()
    rule = rules.rule_for(endpoint)
    shadow = rule.shadow or settings.RATELIMIT_SHADOW
    client = client_key(client_ip)
    label = endpoint if bounded_endpoint or rules.names(endpoint) else OTHER_ENDPOINT
    usages = _count(endpoint=endpoint, client=client, rule=rule)
    if usages is None:
        allowed = settings.RATELIMIT_FAIL_OPEN or shadow  # a dry run never refuses, not even failing closed
        DECISIONS.labels(endpoint=label, outcome=ERROR).inc()
        return Decision(endpoint=endpoint, client=client, rule=rule, outcome=ERROR, allowed=allowed, shadow=shadow)
    if any(usage.current == near_limit_mark(usage.limit) for usage in usages):
        NEAR_LIMIT.labels(endpoint=label).inc()
    if not any(usage.exceeded for usage in usages):
        outcome = ALLOWED
    elif shadow:
        outcome = SHADOW
    else:
        outcome = LIMITED
    DECISIONS.labels(endpoint=label, outcome=outcome).inc()
    return Decision(
        endpoint=endpoint,
        client=client,
        rule=rule,
        outcome=outcome,
        allowed=outcome != LIMITED,
        usages=usages,
        shadow=shadow,
    )


def near_limit_mark(limit: int) -> int:
    """The count at which a client is near its limit; reached exactly once per window (atomic INCR)."""
    return max(1, math.ceil(limit * NEAR_LIMIT_FRACTION))


def _count(*, endpoint: str, client: str, rule: Rule) -> tuple[Usage, ...] | None:
    """Count the request in each of the rule's counters; None if the counters cannot be reached."""
    global _redis_retry_at
    if time.monotonic() < _redis_retry_at:
        return None
    try:
        usages = tuple(
            _count_one(policy=policy, rate=rate, endpoint=endpoint, client=client) for policy, rate in rule.policies()
        )
    except (RedisError, ConnectionInterrupted, OSError) as error:
        # django-ratelimit's own fail-open only covers a cache that answers "no value"; a Redis
        # connection error is raised through it (django-redis re-raises the redis-py error).
        _redis_retry_at = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
        logger.warning("Rate-limit counters unreachable (%s); failing %s", error, _policy_name())
        return None
    except Exception:  # a bug must not turn into a 500 for every request; the failure policy decides
        logger.exception("Rate-limit decision failed for %s; failing %s", endpoint, _policy_name())
        return None
    if any(usage is None for usage in usages):
        logger.warning("Rate-limit counter lost for %s (cache answered no value); failing %s", endpoint, _policy_name())
        return None
    return usages


def _count_one(*, policy: str, rate: Rate, endpoint: str, client: str) -> Usage | None:
    usage = get_usage(
        None,  # the key and rate are given explicitly: django-ratelimit needs no request for them
        group=f"endpointstats:{policy}:{endpoint}",
        key=lambda group, request: client,
        rate=(COUNTER_RATE_COUNT, rate.window_seconds),
        increment=True,
    )
    # With increment=True a reachable counter is >= 1; None or 0 is django-ratelimit's "cache failed".
    if usage is None or not usage["count"]:
        return None
    return Usage(
        policy=policy,
        limit=rate.limit,
        window_seconds=rate.window_seconds,
        current=int(usage["count"]),
        # time_left counts to the window's last whole second; the window ends one second later.
        reset_after=max(1, usage["time_left"] + 1),
    )


def _policy_name() -> str:
    return "open" if settings.RATELIMIT_FAIL_OPEN else "closed"


def reset_redis_backoff() -> None:
    """Forget a recent Redis failure (tests; a process that knows Redis is back)."""
    global _redis_retry_at
    _redis_retry_at = 0.0
