"""Writes of the tracking pipeline: buffer events, store them, drain the buffer."""

import contextlib
import io
import logging
import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone
from redis.exceptions import LockError, RedisError

from analytics import geo
from tracker import buffer, queries
from tracker.events import Event
from tracker.metrics import (
    DRAIN_BATCH_SECONDS,
    DRAIN_LAG_SECONDS,
    EVENTS_BUFFERED,
    EVENTS_DRAINED,
    EVENTS_DROPPED,
    EVENTS_PARKED,
    EVENTS_STORED_DIRECTLY,
)
from tracker.models import AccessEvent, EndpointStat

logger = logging.getLogger(__name__)

# After a failed push, skip Redis for this long: a dead Redis then costs requests
# nothing instead of a connection attempt each.
REDIS_RETRY_AFTER_SECONDS = 2.0
_redis_retry_at = 0.0


def record_events(events: list[Event]) -> None:
    """Hand events to the pipeline without touching the database when Redis is up.

    One RPUSH for the whole list. If Redis is not configured or unreachable, the events
    are stored directly (one transaction), so nothing is lost while the database is up.
    Never raises: an event that cannot be kept anywhere is counted and logged.
    """
    global _redis_retry_at
    if not events:
        return
    if settings.REDIS_URL and time.monotonic() >= _redis_retry_at:
        try:
            buffer.push([event.to_json() for event in events])
        except RedisError as error:
            _redis_retry_at = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
            logger.warning("Event buffer unavailable (%s); storing %d event(s) directly", error, len(events))
        else:
            EVENTS_BUFFERED.inc(len(events))
            return
    try:
        store_events(events)
    except DatabaseError:
        EVENTS_DROPPED.labels(reason="no_storage").inc(len(events))
        logger.exception("Dropped %d event(s): neither Redis nor the database accepted them", len(events))
    else:
        EVENTS_STORED_DIRECTLY.inc(len(events))


@transaction.atomic
def store_events(events: list[Event]) -> int:
    """Store events and add them to the per-endpoint counters, in one transaction.

    Idempotent: an event whose id is already stored is skipped and not counted again.
    Endpoints beyond TRACKING_MAX_ENDPOINTS are stored under the overflow key.
    Returns the number of events newly stored.
    """
    if not events:
        return 0
    events = _cap_endpoints(_locate_and_protect(events))
    if connection.vendor == "postgresql":
        stored = _store_with_copy(events)
    else:
        stored = _store_with_orm(events)
    if stored:
        transaction.on_commit(queries.forget_cached_stats)
    return stored


@dataclass(frozen=True)
class DrainResult:
    stored: int  # new rows
    claimed: int  # events taken from the buffer (re-deliveries included)
    parked: int  # undecodable events moved aside
    batches: int


def drain_buffer(*, batch_size: int | None = None, time_budget_seconds: float | None = None) -> DrainResult:
    """Move buffered events into the database until the buffer is empty or the budget is spent.

    Safe to run twice at once (the second finds the lock taken and returns at once) and
    safe to kill at any point (an unacknowledged batch is claimed again and the insert
    skips what was already stored).
    """
    batch_size = batch_size or settings.DRAIN_BATCH_SIZE
    budget = settings.DRAIN_TIME_BUDGET_SECONDS if time_budget_seconds is None else time_budget_seconds
    lock = buffer.drain_lock(timeout=max(60.0, budget * 2))
    if not lock.acquire():
        return DrainResult(stored=0, claimed=0, parked=0, batches=0)
    stored = claimed = parked = batches = 0
    deadline = time.monotonic() + budget
    try:
        while True:
            payloads = buffer.claim(batch_size=batch_size)
            if not payloads:
                break
            events, bad = _decode(payloads)
            buffer.park(bad)
            with DRAIN_BATCH_SECONDS.time():
                stored += store_events(events)
            buffer.acknowledge()
            if events:
                DRAIN_LAG_SECONDS.observe((timezone.now() - min(e.occurred_at for e in events)).total_seconds())
            claimed += len(payloads)
            parked += len(bad)
            batches += 1
            lock.extend(max(60.0, budget * 2), replace_ttl=True)
            if time.monotonic() >= deadline:
                break
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: nothing to release
            lock.release()
    EVENTS_DRAINED.inc(stored)
    EVENTS_PARKED.inc(parked)
    return DrainResult(stored=stored, claimed=claimed, parked=parked, batches=batches)


def _decode(payloads: list[bytes]) -> tuple[list[Event], list[bytes]]:
    events, bad = [], []
    for payload in payloads:
        try:
            events.append(Event.from_json(payload))
        except (ValueError, KeyError, TypeError):
            bad.append(payload)
    if bad:
        logger.error("Parked %d undecodable buffered event(s) in %s", len(bad), buffer.dead_letter_key())
    return events, bad


def _locate_and_protect(events: list[Event]) -> list[Event]:
    """Derive each event's country from its address, then keep only what the privacy setting allows."""
    # Clients repeat: each distinct address is looked up once per batch and its country is
    # remembered (the look-up, not the database, dominated the drain in bench_drain).
    addresses = list(dict.fromkeys(event.client_ip for event in events))
    located = {
        address: (code, geo.protect(address)) for address, code in zip(addresses, _countries(addresses), strict=True)
    }
    result = []
    for event in events:
        country, client_ip = located[event.client_ip]
        if country != event.country or client_ip != event.client_ip:
            event = replace(event, country=country, client_ip=client_ip)
        result.append(event)
    return result


# Country per address, remembered across batches; keyed by the geo source too. Bounded:
# emptied when full, which costs one batch of look-ups.
_COUNTRY_CACHE: dict[tuple[str, str | None], str] = {}
_COUNTRY_CACHE_SIZE = 100_000


def _countries(addresses: list[str | None]) -> list[str]:
    source = getattr(settings, "GEOIP_PATH", "")
    missing = [address for address in addresses if (source, address) not in _COUNTRY_CACHE]
    if missing:
        if len(_COUNTRY_CACHE) + len(missing) > _COUNTRY_CACHE_SIZE:
            _COUNTRY_CACHE.clear()
        for address, code in zip(missing, geo.countries(missing), strict=True):
            _COUNTRY_CACHE[(source, address)] = code
    return [_COUNTRY_CACHE[(source, address)] for address in addresses]


def _cap_endpoints(events: list[Event]) -> list[Event]:
    """Keep the number of distinct endpoints bounded, whatever clients or /collect send."""
    known = queries.known_endpoints()
    room = settings.TRACKING_MAX_ENDPOINTS - len(known - {settings.TRACKING_OVERFLOW_ENDPOINT})
    admitted = set()
    capped = []
    for event in events:
        name = event.endpoint
        if name not in known and name not in admitted:
            if room > 0:
                admitted.add(name)
                room -= 1
            else:
                event = event.with_endpoint(settings.TRACKING_OVERFLOW_ENDPOINT)
        capped.append(event)
    return capped


_COLUMNS = (
    "event_id",
    "endpoint",
    "method",
    "status_code",
    "is_error",
    "duration_ms",
    "client_ip",
    "user_agent",
    "pod_name",
    "country",
    "occurred_at",
)

# Insert the staged batch, skipping ids already stored, and fold exactly the rows that
# were inserted into the counters: one statement, one upsert per endpoint.
_NEWER = "stat.last_accessed_at IS NULL OR EXCLUDED.last_accessed_at >= stat.last_accessed_at"
_INSERT_AND_COUNT = f"""
WITH inserted AS (
    INSERT INTO {AccessEvent._meta.db_table} ({", ".join(_COLUMNS)})
    SELECT {", ".join(_COLUMNS)} FROM tracker_incoming_event
    ON CONFLICT (event_id, occurred_at) DO NOTHING
    RETURNING endpoint, is_error, duration_ms, client_ip, pod_name, occurred_at
), per_endpoint AS (
    SELECT endpoint,
           count(*) AS access_count,
           count(*) FILTER (WHERE NOT is_error) AS success_count,
           count(*) FILTER (WHERE is_error) AS error_count,
           coalesce(sum(duration_ms), 0) AS total_response_time_ms,
           max(occurred_at) AS last_accessed_at,
           (array_agg(duration_ms ORDER BY occurred_at DESC))[1] AS last_response_time_ms,
           (array_agg(client_ip ORDER BY occurred_at DESC))[1] AS last_client_ip,
           (array_agg(pod_name ORDER BY occurred_at DESC))[1] AS last_pod_name
    FROM inserted GROUP BY endpoint
), upserted AS (
INSERT INTO {EndpointStat._meta.db_table} AS stat (
    endpoint, access_count, success_count, error_count, total_response_time_ms,
    last_accessed_at, last_response_time_ms, last_client_ip, last_pod_name
)
SELECT * FROM per_endpoint
ON CONFLICT (endpoint) DO UPDATE SET
    access_count = stat.access_count + EXCLUDED.access_count,
    success_count = stat.success_count + EXCLUDED.success_count,
    error_count = stat.error_count + EXCLUDED.error_count,
    total_response_time_ms = stat.total_response_time_ms + EXCLUDED.total_response_time_ms,
    last_accessed_at = greatest(stat.last_accessed_at, EXCLUDED.last_accessed_at),
    last_response_time_ms = CASE WHEN {_NEWER}
        THEN EXCLUDED.last_response_time_ms ELSE stat.last_response_time_ms END,
    last_client_ip = CASE WHEN {_NEWER}
        THEN EXCLUDED.last_client_ip ELSE stat.last_client_ip END,
    last_pod_name = CASE WHEN {_NEWER}
        THEN EXCLUDED.last_pod_name ELSE stat.last_pod_name END
)
SELECT coalesce(sum(access_count), 0) FROM per_endpoint
"""


def _store_with_copy(events: list[Event]) -> int:
    """PostgreSQL: COPY the batch into a session temp table, then one INSERT ... SELECT."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS tracker_incoming_event ON COMMIT DELETE ROWS AS "
            f"SELECT {', '.join(_COLUMNS)} FROM {AccessEvent._meta.db_table} WITH NO DATA"
        )
        cursor.copy_expert(
            f"COPY tracker_incoming_event ({', '.join(_COLUMNS)}) FROM STDIN",
            io.StringIO("".join(_copy_line(event) for event in events)),
        )
        cursor.execute(_INSERT_AND_COUNT)
        return int(cursor.fetchone()[0])


def _copy_line(event: Event) -> str:
    values = (
        event.event_id,
        event.endpoint,
        event.method,
        event.status_code,
        "t" if event.is_error else "f",
        event.duration_ms,
        event.client_ip,
        event.user_agent,
        event.pod_name,
        event.country,
        event.occurred_at.isoformat(),
    )
    # Fast path: join once and check the line once; almost no value needs escaping.
    line = "\t".join([r"\N" if value is None else str(value) for value in values])
    if "\\" in line or "\n" in line or "\r" in line or line.count("\t") != len(values) - 1:
        line = "\t".join(_copy_value(value) for value in values)
    return line + "\n"


def _copy_value(value) -> str:
    if value is None:
        return r"\N"
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def _store_with_orm(events: list[Event]) -> int:
    """Portable path (the embedded SQLite default): skip known ids, bulk insert, F() counters."""
    ids = [event.event_id for event in events]
    seen = {uuid.hex for uuid in AccessEvent.objects.filter(event_id__in=ids).values_list("event_id", flat=True)}
    fresh = {}
    for event in events:
        if event.event_id not in seen:
            fresh.setdefault(event.event_id, event)
    AccessEvent.objects.bulk_create(AccessEvent(**_fields(event)) for event in fresh.values())
    for endpoint, group in _group_by_endpoint(fresh.values()).items():
        last = max(group, key=lambda e: e.occurred_at)
        stat, _ = EndpointStat.objects.get_or_create(endpoint=endpoint)
        errors = sum(1 for e in group if e.is_error)
        changes = {
            "access_count": F("access_count") + len(group),
            "success_count": F("success_count") + len(group) - errors,
            "error_count": F("error_count") + errors,
            "total_response_time_ms": F("total_response_time_ms") + sum(e.duration_ms or 0 for e in group),
        }
        if stat.last_accessed_at is None or last.occurred_at >= stat.last_accessed_at:
            changes |= {
                "last_accessed_at": last.occurred_at,
                "last_response_time_ms": last.duration_ms,
                "last_client_ip": last.client_ip,
                "last_pod_name": last.pod_name,
            }
        EndpointStat.objects.filter(pk=stat.pk).update(**changes)
    return len(fresh)


def _fields(event: Event) -> dict:
    return {column: getattr(event, column) for column in _COLUMNS}


def _group_by_endpoint(events) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.endpoint, []).append(event)
    return groups


def reset_redis_backoff() -> None:
    """Try Redis again on the next event (tests, and after an operator fixed Redis)."""
    global _redis_retry_at
    _redis_retry_at = 0.0
