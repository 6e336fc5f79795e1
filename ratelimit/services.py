"""Rate-limit decisions, shared by the web role's middleware and the limiter role's /check.

Counting is one Lua script on the default cache's Redis (django-redis), so every replica of both
roles shares the counters: for each of the rule's counters it runs an atomic `INCR` (and sets the
expiry when the `INCR` created the key), so concurrent requests each get a distinct count and
exactly `limit` of them are admitted. A decision costs ONE Redis round trip, whatever the number
of counters (a rule with a burst window counts in two). The script is sent by SHA (`EVALSHA`),
and in full (`EVAL`, which caches it) only when a server does not know it yet.

django-ratelimit stays the library for what it does well: its window arithmetic (`_get_window`:
fixed windows whose edges are staggered per client, so clients do not all reset at once), its
settings (RATELIMIT_IPV4_MASK / RATELIMIT_IPV6_MASK, RATELIMIT_FAIL_OPEN) and its `@ratelimit`
decorator for any view that wants a limit of its own. Its `get_usage` costs two round trips per
counter (`SET NX`, then `INCR`) and cannot count several counters at once, so these counters are
our own keys; a view decorated with `@ratelimit` keeps separate counters of django-ratelimit's.

The key scheme (what web and limiter must agree on):
    key = cache.make_key("rl:{<client>}:<policy>:<window_seconds>:<window end>:<endpoint>")
client is client_key(ip) ("203.0.113.7/32", IPv6 per /64), policy "endpoint" or "burst",
endpoint the route. The `{<client>}` hash tag puts all counters of one client in one Redis
Cluster slot, so the multi-key script is valid on a cluster. The limit is not in the key, so
changing a limit keeps every client's count in the current window (a lowered limit applies at
once, a raised one frees the difference). Changing a window's length starts new counters.
"""

import functools
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.base import BaseCache
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_ratelimit.core import _get_window
from django_redis import get_redis_connection
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from prometheus_client import Counter
from redis import Redis
from redis.exceptions import NoScriptError, RedisError

from ratelimit import rules as rules_module
from ratelimit.metrics import DECISIONS, NEAR_LIMIT
from ratelimit.queries import refusals_key
from ratelimit.rules import Rate, Rule
from tracker import buffer, redis_direct
from tracker.backoff import Backoff
from tracker.hotsettings import snapshot
from tracker.metrics import EVENTS_BUFFERED

logger = logging.getLogger(__name__)

ALLOWED, LIMITED, SHADOW, ERROR = "allowed", "limited", "shadow", "error"
# A counter outlives its window by this much (as django-ratelimit's EXPIRATION_FUDGE), so a
# request at the very end of a window never finds its counter already gone.
EXPIRY_MARGIN_SECONDS = 5
# Every counter of one request in one round trip: INCR each key, set the expiry of new ones.
_COUNT_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  counts[i] = count
end
return counts
"""
# The same, deciding too, and appending the request's event to the tracking buffer: KEYS = the counters,
# then the buffer stream, then this minute's refusals counter; ARGV = their expiries, their limits, "1" to
# enforce (not a dry run), the buffer's field name, the event, the refusals counter's expiry. The reply is
# the counts, then 1 if the served event was appended, or 2 if the request was refused: then the event
# appended is the 429's (the same request, status 429) and the refusal is counted, all in this one round
# trip. The 429's JSON is the served one with its status fields replaced: Event.to_json writes
# "status_code" and "is_error" next to each other, and the pattern, which starts with an unescaped quote,
# cannot match inside a JSON string value.
_COUNT_AND_TRACK_SCRIPT = """
local n = #KEYS - 2
local counts = {}
local refused = false
for i = 1, n do
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[i]) end
  counts[i] = count
  if count > tonumber(ARGV[n + i]) then refused = true end
end
if refused and ARGV[2 * n + 1] == '1' then
  local refusal = string.gsub(
    ARGV[2 * n + 3], '"status_code":%d+,"is_error":%a+', '"status_code":429,"is_error":false', 1)
  redis.call('XADD', KEYS[n + 1], '*', ARGV[2 * n + 2], refusal)
  if redis.call('INCR', KEYS[n + 2]) == 1 then redis.call('EXPIRE', KEYS[n + 2], ARGV[2 * n + 4]) end
  counts[n + 1] = 2
else
  redis.call('XADD', KEYS[n + 1], '*', ARGV[2 * n + 2], ARGV[2 * n + 3])
  counts[n + 1] = 1
end
return counts
"""
NEAR_LIMIT_FRACTION = 0.8
UNKNOWN_CLIENT = "unknown"  # no usable address (misconfigured proxy set-up): such requests share one counter
OTHER_ENDPOINT = "<other>"  # metric label for /check endpoints without a rule (callers choose those names)
# After a Redis failure, do not try Redis for this long: a dead Redis then costs a request nothing.
REDIS_RETRY_AFTER_SECONDS = 1.0
_counters_backoff = Backoff(REDIS_RETRY_AFTER_SECONDS)


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
    event_buffered: bool = False  # its event (a refusal's: the 429's) was appended to the buffer with the count

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
    config = limit_settings()
    return _client_key(ip, config.ipv4_mask, config.ipv6_mask)


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """What a decision reads per request (tracker.hotsettings)."""

    shadow: bool
    ipv4_mask: int
    ipv6_mask: int


@snapshot
def limit_settings() -> LimitSettings:
    return LimitSettings(
        shadow=settings.RATELIMIT_SHADOW,
        ipv4_mask=settings.RATELIMIT_IPV4_MASK,
        ipv6_mask=settings.RATELIMIT_IPV6_MASK,
    )


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest of a decision's Python
def _client_key(ip: str, ipv4_mask: int, ipv6_mask: int) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN_CLIENT
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    mask = ipv4_mask if address.version == 4 else ipv6_mask
    return str(ipaddress.ip_network(f"{address}/{mask}", strict=False))


def check_rate(
    *, endpoint: str, client_ip: str | None, bounded_endpoint: bool = True, event: str | None = None
) -> Decision:
    """Count one request by `client_ip` to `endpoint` and decide whether it may proceed.

    Every call counts, refused ones included. Exact under concurrency (atomic Redis INCR).
    Never raises for an unreachable Redis: the decision's outcome is then "error" and `allowed`
    follows RATELIMIT_FAIL_OPEN (shadow mode never refuses). Shadow mode (RATELIMIT_SHADOW or
    the rule's "shadow") turns "limited" into "shadow" and allows the request.
    `bounded_endpoint=False` (names chosen by callers of /check) labels metrics of endpoints
    without a rule as "<other>".

    `event` (an encoded tracking event, see can_buffer_with_count) is appended to the tracking buffer
    in the same script, or, if the request is refused, its 429's event (and the refusal is counted
    there too): the decision's `event_buffered` says whether either was.
    """
    rules = rules_module.current_rules()
    rule = rules.rule_for(endpoint)
    shadow = rule.shadow or limit_settings().shadow
    client = client_key(client_ip)
    label = endpoint if bounded_endpoint or rules.has_own_rule(endpoint) else OTHER_ENDPOINT
    counted = _count(endpoint=endpoint, client=client, rule=rule, event=event, enforce=not shadow)
    if counted is None:
        allowed = settings.RATELIMIT_FAIL_OPEN or shadow  # a dry run never refuses, not even failing closed
        _decisions(label, ERROR).inc()
        return Decision(endpoint=endpoint, client=client, rule=rule, outcome=ERROR, allowed=allowed, shadow=shadow)
    usages, event_buffered = counted
    if event_buffered:
        EVENTS_BUFFERED.inc()
    if any(usage.current == near_limit_mark(usage.limit) for usage in usages):
        _near_limit(label).inc()
    if not any(usage.exceeded for usage in usages):
        outcome = ALLOWED
    elif shadow:
        outcome = SHADOW
    else:
        outcome = LIMITED
    _decisions(label, outcome).inc()
    if outcome == LIMITED and not event_buffered:  # a refusal the script buffered, it also counted
        note_refusal()
    return Decision(
        endpoint=endpoint,
        client=client,
        rule=rule,
        outcome=outcome,
        allowed=outcome != LIMITED,
        usages=usages,
        shadow=shadow,
        event_buffered=event_buffered,
    )


@functools.cache  # labelled children, looked up once (endpoint names are bounded: routes or rules)
def _decisions(endpoint: str, outcome: str) -> Counter:
    return DECISIONS.labels(endpoint=endpoint, outcome=outcome)


@functools.cache
def _near_limit(endpoint: str) -> Counter:
    return NEAR_LIMIT.labels(endpoint=endpoint)


REFUSALS_KEEP_SECONDS = 3600


def note_refusal(*, now: float | None = None) -> None:
    """Count a refusal in this minute's counter (for the admin console's "refusals now").

    Only refused requests pay it: one pipelined INCR + EXPIRE on Redis (none for a cheap view refused
    after it ran: the count script counts those in the same key). Not counted on the embedded
    default (no Redis), where every write to the shared SQLite cache would contend with the counters.
    Never raises.
    """
    if not settings.REDIS_URL:
        return
    key = cache.make_key(refusals_key(int((time.time() if now is None else now) // 60)))
    try:
        pipe = get_redis_connection("default").pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, REFUSALS_KEEP_SECONDS)
        pipe.execute()
    except (RedisError, ConnectionInterrupted, OSError):
        logger.debug("Could not count a refusal", exc_info=True)


def near_limit_mark(limit: int) -> int:
    """The count at which a client is near its limit; reached exactly once per window (atomic INCR)."""
    return max(1, math.ceil(limit * NEAR_LIMIT_FRACTION))


def _count(
    *, endpoint: str, client: str, rule: Rule, event: str | None, enforce: bool
) -> tuple[tuple[Usage, ...], bool] | None:
    """Count the request in each of the rule's counters (and buffer its event unless refused);
    None if the counters cannot be reached (the event is then not buffered)."""
    if not _counters_backoff.ready():
        return None
    try:
        return count_request(endpoint=endpoint, client=client, policies=rule.policies(), event=event, enforce=enforce)
    except (RedisError, ConnectionInterrupted, OSError) as error:
        _counters_backoff.failed()
        logger.warning("Rate-limit counters unreachable (%s); failing %s", error, _policy_name())
        return None
    except Exception:  # a bug must not turn into a 500 for every request; the failure policy decides
        logger.exception("Rate-limit decision failed for %s; failing %s", endpoint, _policy_name())
        return None


def counter_name(*, policy: str, window_seconds: int, window_end: int, endpoint: str, client: str) -> str:
    """The cache key of one counter (see the module docstring); `{client}` is the Cluster hash tag."""
    return f"rl:{{{client}}}:{policy}:{window_seconds}:{window_end}:{endpoint}"


def counter_key(*, policy: str, window_seconds: int, window_end: int, endpoint: str, client: str) -> str:
    """The Redis key of one counter: its counter_name() under the cache's KEY_PREFIX."""
    name = counter_name(
        policy=policy, window_seconds=window_seconds, window_end=window_end, endpoint=endpoint, client=client
    )
    return cache.make_key(name)


@dataclass(frozen=True)
class CounterStore:
    """Where the counters live: the default cache and, on Redis, its client."""

    backend: BaseCache
    redis: Redis | None  # None on the embedded default
    standalone: bool  # one standalone server: the thread's held connection, and one script can also buffer


_redis_store: CounterStore | None = None


def counter_store() -> CounterStore:
    """The default cache's counter store; resolved once per process on Redis (a request saves the cache
    handler's lookups), looked up each time on the embedded default (its cache object is per thread)."""
    global _redis_store
    if _redis_store is not None:
        return _redis_store
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return CounterStore(backend=backend, redis=None, standalone=False)
    client = get_redis_connection("default")
    _redis_store = CounterStore(backend=backend, redis=client, standalone=redis_direct.supports(client))
    return _redis_store


@receiver(setting_changed)
def _forget_counter_store(*, setting: str, **kwargs: object) -> None:
    global _redis_store
    if setting in ("CACHES", "REDIS_URL"):  # tests point the cache elsewhere
        _redis_store = None


def can_buffer_with_count() -> bool:
    """True where the counters and the tracking buffer share one standalone Redis, so that one script
    can count a request and buffer its event (not on the embedded default, not on a Redis Cluster,
    where the buffer's stream and a client's counters live in different slots)."""
    return counter_store().standalone


def count_request(
    *,
    endpoint: str,
    client: str,
    policies: tuple[tuple[str, Rate], ...],
    event: str | None = None,
    enforce: bool = True,
) -> tuple[tuple[Usage, ...], bool]:
    """INCR every counter of one request in one round trip (atomic per counter); raises RedisError.

    With an `event` (only where can_buffer_with_count()), the same script appends it to this
    process's tracking buffer shard; if a counter is over its limit and `enforce` is set, it appends
    the 429's event instead and counts the refusal in this minute's counter (note_refusal's).
    Returns the usages and whether an event was buffered."""
    now = int(time.time())
    names, expiries, windows = [], [], []
    for policy, rate in policies:
        # django-ratelimit's window: fixed, its edge staggered per client.
        window_end = _get_window(client, rate.window_seconds)
        names.append(
            counter_name(
                policy=policy,
                window_seconds=rate.window_seconds,
                window_end=window_end,
                endpoint=endpoint,
                client=client,
            )
        )
        expiries.append(rate.window_seconds + EXPIRY_MARGIN_SECONDS)
        windows.append(window_end)
    store = counter_store()
    backend = store.backend
    buffered = False
    if store.redis is not None and event is not None:
        keys = [backend.make_key(n) for n in names] + [buffer.local_stream_key(), _refusals_key(backend, now)]
        limits = [rate.limit for _, rate in policies]
        reply = _evalsha(
            store,
            _COUNT_AND_TRACK_SCRIPT,
            _COUNT_AND_TRACK_SHA,
            keys=keys,
            args=[*expiries, *limits, int(enforce), buffer.FIELD, event, REFUSALS_KEEP_SECONDS],
        )
        counts, buffered = reply[:-1], reply[-1] in (1, 2)
    elif store.redis is not None:
        keys = [backend.make_key(n) for n in names]
        counts = _evalsha(store, _COUNT_SCRIPT, _COUNT_SHA, keys=keys, args=expiries)
    else:  # the embedded default's shared cache: its atomic add/incr, as django-ratelimit counts
        counts = [_add_or_incr(backend, name, expiry) for name, expiry in zip(names, expiries, strict=True)]
    usages = tuple(
        Usage(
            policy=policy,
            limit=rate.limit,
            window_seconds=rate.window_seconds,
            current=int(count),
            # window_end is the window's last whole second; the window ends one second later.
            reset_after=max(1, window_end - now + 1),
        )
        for (policy, rate), count, window_end in zip(policies, counts, windows, strict=True)
    )
    return usages, buffered


_minute_refusals: tuple[int, BaseCache, str] | None = None  # (minute, cache, its refusals key)


def _refusals_key(backend: BaseCache, now: int) -> str:
    """This minute's refusals counter (note_refusal's key), built once a minute: every tracked cheap
    request passes it to the script, though only a refused one touches it."""
    global _minute_refusals
    minute = now // 60
    memo = _minute_refusals
    if memo is None or memo[0] != minute or memo[1] is not backend:
        memo = _minute_refusals = (minute, backend, backend.make_key(refusals_key(minute)))
    return memo[2]


def _add_or_incr(backend: BaseCache, name: str, expiry: int) -> int:
    if backend.add(name, 1, expiry):
        return 1
    return backend.incr(name)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


_COUNT_SHA = _sha(_COUNT_SCRIPT)
_COUNT_AND_TRACK_SHA = _sha(_COUNT_AND_TRACK_SCRIPT)


def _evalsha(
    store: CounterStore, script: str, sha: str, *, keys: list[str], args: Sequence[int | str | bytes]
) -> list[int]:
    """Run the count script in one round trip on the connection this thread keeps (tracker.redis_direct).

    A new or flushed server answers NOSCRIPT: EVAL then sends the script, which it caches. A client
    without a plain connection pool (Redis Cluster) goes through redis-py's Script as usual.
    """
    client = store.redis
    assert client is not None  # called for a Redis store only
    if not store.standalone:
        return client.register_script(script)(keys=keys, args=args)
    try:
        return redis_direct.command(client, "EVALSHA", sha, len(keys), *keys, *args)
    except NoScriptError:
        return redis_direct.command(client, "EVAL", script, len(keys), *keys, *args)


def _policy_name() -> str:
    return "open" if settings.RATELIMIT_FAIL_OPEN else "closed"


def reset_redis_backoff() -> None:
    """Forget a recent Redis failure (tests; a process that knows Redis is back)."""
    _counters_backoff.reset()
