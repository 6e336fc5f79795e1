"""/collect: hand events sent by other services to the tracking pipeline, within a token's quota."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from tracker import queries as tracker_queries
from tracker import services as tracker_services
from tracker.events import Event

logger = logging.getLogger(__name__)


class NewEndpointQuotaExceeded(Exception):
    """A token would introduce more new endpoint names than ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN."""

    def __init__(self, *, used: int, asked: int, quota: int) -> None:
        super().__init__(
            f"This token has introduced {used} new endpoint name(s) and this request adds {asked}; a token may "
            f"introduce at most {quota} (ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN), so that no one client can "
            "fill the endpoint cap. Send known endpoints, or ask an admin for another token."
        )


def collect_events(*, events: list[Event], token_id: int | None = None) -> int:
    """Hand validated events to the tracking pipeline (one RPUSH; drained like tracked requests).

    With a token_id, the endpoint names that have no counters yet count against that token's
    quota first; raises NewEndpointQuotaExceeded (nothing accepted) when they would go over.
    Returns how many were accepted. Never stores directly unless Redis is down (then the
    pipeline writes them to PostgreSQL itself).
    """
    if token_id is not None:
        admit_new_endpoints(token_id=token_id, endpoints={event.endpoint for event in events})
    tracker_services.record_events(events)
    return len(events)


# Atomic: concurrent requests of one token cannot overshoot its quota. Returns {admitted, used, fresh}.
_ADMIT_SCRIPT = """
local fresh = 0
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then fresh = fresh + 1 end
end
local used = redis.call('SCARD', KEYS[1])
if used + fresh > tonumber(ARGV[1]) then return {0, used, fresh} end
if fresh > 0 then redis.call('SADD', KEYS[1], unpack(ARGV, 2)) end
return {1, used + fresh, fresh}
"""


def admit_new_endpoints(*, token_id: int, endpoints: set[str]) -> None:
    """Count the names among `endpoints` that have no counters yet against the token's quota of new
    endpoint names (a set per token, kept in Redis without expiry: a name counts once per token).

    Raises NewEndpointQuotaExceeded and records nothing if they would go over. Redis unreachable:
    admits (TRACKING_MAX_ENDPOINTS still bounds the counters).
    """
    new = sorted(endpoints - tracker_queries.known_endpoints())
    if not new:
        return
    quota = settings.ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN
    key = cache.make_key(f"analytics:new-endpoints:{token_id}")
    if not settings.REDIS_URL:  # embedded default: one process, no atomicity needed
        known = cache.get(key) or set()
        fresh = set(new) - known
        if len(known) + len(fresh) > quota:
            raise NewEndpointQuotaExceeded(used=len(known), asked=len(fresh), quota=quota)
        cache.set(key, known | fresh, None)
        return
    try:
        admitted, used, fresh = get_redis_connection("default").eval(_ADMIT_SCRIPT, 1, key, quota, *new)
    except RedisError:
        logger.warning("Redis unavailable: new endpoint names of token %s admitted without its quota", token_id)
        return
    if not admitted:
        raise NewEndpointQuotaExceeded(used=used, asked=fresh, quota=quota)
