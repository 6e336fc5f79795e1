"""How events reach PostgreSQL (or the embedded SQLite): the write side of the drain.

store_payloads takes buffered JSON payloads on PostgreSQL; store_with_orm is the portable
path. Both are idempotent by event id, add exactly the newly stored events to the
per-endpoint counters (one _Counter per endpoint, computed the same way for both), derive
countries and apply the endpoint cap. Call inside a transaction.
"""

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import NamedTuple

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import F

from tracker import geo, queries
from tracker.clients import is_ip_address
from tracker.events import Event
from tracker.models import AccessEvent, EndpointStat


def _locate_and_protect(events: list[Event]) -> list[Event]:
    """Derive each event's country from its address, then keep only what the privacy setting allows."""
    located = _locate([event.client_ip for event in events if event.client_ip])
    result = []
    for event in events:
        country, client_ip = located.get(event.client_ip or "", ("", event.client_ip))
        if country != event.country or client_ip != event.client_ip:
            event = replace(event, country=country, client_ip=client_ip)
        result.append(event)
    return result


# What each client address becomes (its country, the address as stored), remembered across
# batches since clients repeat (look-ups, not the database, dominated the drain in bench_drain),
# and keyed by the settings that decide it. Bounded: emptied when full.
_LOCATED: dict[tuple, tuple[str, str | None]] = {}
_LOCATED_SIZE = 100_000


def _locate(addresses: list[str]) -> dict[str, tuple[str, str | None]]:
    """(country, address as stored) for each valid address among these; invalid ones are left out."""
    decided_by = (settings.GEOIP_PATH, settings.ANALYTICS_CLIENT_IP_PRIVACY, settings.ANALYTICS_CLIENT_IP_HASH_KEY)
    missing = [address for address in dict.fromkeys(addresses) if (decided_by, address) not in _LOCATED]
    valid = [address for address in missing if is_ip_address(address)]
    if valid:
        if len(_LOCATED) + len(valid) > _LOCATED_SIZE:
            _LOCATED.clear()
        for address, country in zip(valid, geo.countries(valid), strict=True):
            _LOCATED[(decided_by, address)] = (country, geo.protect(address))
    return {address: _LOCATED[(decided_by, address)] for address in addresses if (decided_by, address) in _LOCATED}


def _cap_endpoints(events: list[Event]) -> list[Event]:
    """Keep the number of distinct endpoints bounded, whatever clients or /collect send."""
    overflowing = _overflowing_endpoints(list(dict.fromkeys(event.endpoint for event in events)))
    if not overflowing:
        return events
    overflow = settings.TRACKING_OVERFLOW_ENDPOINT
    return [event.with_endpoint(overflow) if event.endpoint in overflowing else event for event in events]


# Transaction-level advisory lock key ("tracker-endpoint-admission") under which new endpoints are admitted.
_ADMISSION_LOCK = ("tracker-endpoint-admission", 0)


def _overflowing_endpoints(names: list[str]) -> set[str]:
    """Of these endpoint names (in order of arrival), the new ones beyond TRACKING_MAX_ENDPOINTS.

    A batch that brings new endpoints takes a transaction-level advisory lock and reads the known
    ones again under it: two drains admitting endpoints at once would otherwise both see the same
    room and overshoot the cap. Held until commit, so the next one sees the rows this one adds.
    Batches of known endpoints only (the usual case) take no lock.
    """
    known = queries.known_endpoints()
    new = [name for name in names if name not in known]
    if not new:
        return set()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", list(_ADMISSION_LOCK))
        known = queries.known_endpoints()
        new = [name for name in names if name not in known]
    room = settings.TRACKING_MAX_ENDPOINTS - len(known - {settings.TRACKING_OVERFLOW_ENDPOINT})
    return set(new[max(room, 0) :])


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

# Each buffered payload is one line of JSON. COPY's CSV mode with a unit separator as the
# delimiter and a record separator as the quote takes the bytes as they are: JSON escapes
# every control character, so neither can appear inside a payload.
_COPY_PAYLOADS = (
    "COPY tracker_incoming_payload (payload) FROM STDIN WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')"
)

# Stage the batch: read the JSON, apply the per-address country/privacy mapping and the
# endpoint cap. Parameters: addresses, countries, stored addresses (three arrays),
# overflowing endpoints, the overflow key.
_STAGE = f"""
INSERT INTO tracker_incoming_event ({", ".join(_COLUMNS)})
WITH located AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::inet[]) AS m(address, country, stored_ip)
)
SELECT (p->>'event_id')::uuid,
       CASE WHEN p->>'endpoint' = ANY(%s::text[]) THEN %s ELSE p->>'endpoint' END,
       coalesce(p->>'method', ''),
       (p->>'status_code')::integer,
       coalesce((p->>'is_error')::boolean, false),
       (p->>'duration_ms')::double precision,
       CASE WHEN located.address IS NULL THEN (p->>'client_ip')::inet ELSE located.stored_ip END,
       coalesce(p->>'user_agent', ''),
       coalesce(p->>'pod_name', ''),
       coalesce(located.country, p->>'country', ''),
       to_timestamp((p->>'occurred_at')::double precision)
FROM tracker_incoming_payload AS incoming(p)
LEFT JOIN located ON located.address = p->>'client_ip'
"""

# Insert the staged events that are new (ON CONFLICT on the event id) and fold exactly
# those into the counters: one statement, one upsert per endpoint.
_NEWER = "stat.last_accessed_at IS NULL OR EXCLUDED.last_accessed_at >= stat.last_accessed_at"
_COUNTER_COLUMNS = (
    "endpoint, access_count, success_count, error_count, total_response_time_ms,"
    " last_accessed_at, last_response_time_ms, last_client_ip, last_pod_name"
)
# Counters only grow; the "last" fields follow the newest request, whatever order batches come in.
_COUNTER_CONFLICT = f"""ON CONFLICT (endpoint) DO UPDATE SET
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
"""
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
INSERT INTO {EndpointStat._meta.db_table} AS stat ({_COUNTER_COLUMNS})
SELECT * FROM per_endpoint ORDER BY endpoint
{_COUNTER_CONFLICT}
)
SELECT (SELECT coalesce(sum(access_count), 0) FROM per_endpoint),
       (SELECT min(occurred_at) FROM tracker_incoming_event)
"""

# What Python decides per distinct value (not per event): addresses, and endpoints in order of first use.
_DISTINCT_VALUES = """
SELECT 'address', p->>'client_ip', 0 FROM tracker_incoming_payload AS t(p)
    WHERE p->>'client_ip' IS NOT NULL GROUP BY 2
UNION ALL
SELECT 'endpoint', p->>'endpoint', min((p->>'occurred_at')::double precision) FROM tracker_incoming_payload AS t(p)
    WHERE p->>'endpoint' IS NOT NULL GROUP BY 2
ORDER BY 1, 3, 2
"""


def store_payloads(payloads: list[bytes | str]) -> tuple[int, datetime | None]:
    """PostgreSQL: store a batch of JSON payloads; (events newly stored, oldest event time).

    Almost every batch has never been stored: it is COPYed straight into the table. A batch
    that was (re-delivered after a crash, or holding one event twice) makes the COPY fail
    on the unique event id, and takes the idempotent path instead. Call inside a transaction.
    """
    try:
        with transaction.atomic():
            return _copy_new_payloads(payloads)
    except IntegrityError:
        return _merge_payloads(payloads)


class _Row(NamedTuple):
    """One event as stored (AccessEvent's columns, in _COLUMNS order): what COPY writes per line."""

    event_id: str
    endpoint: str
    method: str
    status_code: int | None
    is_error: bool
    duration_ms: float | None
    client_ip: str | None
    user_agent: str
    pod_name: str
    country: str
    occurred_at: datetime


@dataclass
class _Counter:
    """What one batch adds to an endpoint's EndpointStat row (_COUNTER_COLUMNS, the "last" fields
    from its newest event; ties go to the later one in the batch)."""

    endpoint: str
    last_accessed_at: datetime
    last_response_time_ms: float | None
    last_client_ip: str | None
    last_pod_name: str
    access_count: int = 0
    success_count: int = 0
    error_count: int = 0
    total_response_time_ms: float = 0.0

    def add(self, row: _Row | Event) -> None:
        self.access_count += 1
        if row.is_error:
            self.error_count += 1
        else:
            self.success_count += 1
        self.total_response_time_ms += float(row.duration_ms or 0)
        if row.occurred_at >= self.last_accessed_at:
            self.last_accessed_at, self.last_response_time_ms = row.occurred_at, row.duration_ms
            self.last_client_ip, self.last_pod_name = row.client_ip, row.pod_name

    def columns(self) -> tuple[object, ...]:
        """The values in _COUNTER_COLUMNS order."""
        return (
            self.endpoint,
            self.access_count,
            self.success_count,
            self.error_count,
            self.total_response_time_ms,
            self.last_accessed_at,
            self.last_response_time_ms,
            self.last_client_ip,
            self.last_pod_name,
        )


def _count(rows: Sequence[_Row | Event]) -> dict[str, _Counter]:
    """Per endpoint, what these rows (or events: the same fields) add to the counters."""
    counters: dict[str, _Counter] = {}
    for row in rows:
        counter = counters.get(row.endpoint)
        if counter is None:
            counters[row.endpoint] = counter = _Counter(
                row.endpoint, row.occurred_at, row.duration_ms, row.client_ip, row.pod_name
            )
        counter.add(row)
    return counters


def _rows_from_payloads(payloads: list[bytes | str]) -> list[_Row]:
    """Decode buffered payloads into rows: countries derived, addresses protected, endpoints capped.
    Raises DataError if any payload is unreadable."""
    try:
        events = [orjson.loads(payload) for payload in payloads]
        addresses = list(dict.fromkeys(event.get("client_ip") for event in events if event.get("client_ip")))
        located = {address: (country, stored) for address, country, stored in _located_addresses(addresses)}
        first_seen: dict[str, float] = {}
        for event in events:
            moment = float(event["occurred_at"])
            first_seen[event["endpoint"]] = min(first_seen.get(event["endpoint"], moment), moment)
        overflowing = _overflowing_endpoints(sorted(first_seen, key=lambda name: (first_seen[name], name)))
        rows = []
        for event in events:
            endpoint = event["endpoint"]
            is_error = event.get("is_error") or False
            if not isinstance(is_error, bool):
                raise TypeError(f"is_error must be true or false, not {is_error!r}")
            country, client_ip = located.get(
                event.get("client_ip"), (event.get("country") or "", event.get("client_ip"))
            )
            rows.append(
                _Row(
                    event_id=event["event_id"],
                    endpoint=settings.TRACKING_OVERFLOW_ENDPOINT if endpoint in overflowing else endpoint,
                    method=event.get("method") or "",
                    status_code=event.get("status_code"),
                    is_error=is_error,
                    duration_ms=event.get("duration_ms"),
                    client_ip=client_ip,
                    user_agent=event.get("user_agent") or "",
                    pod_name=event.get("pod_name") or "",
                    country=country,
                    occurred_at=datetime.fromtimestamp(float(event["occurred_at"]), tz=UTC),
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"unreadable buffered event: {error!r}") from error
    return rows


def _copy_new_payloads(payloads: list[bytes | str]) -> tuple[int, datetime | None]:
    """COPY events straight into the table and add them to the counters; IntegrityError if any is stored."""
    rows = _rows_from_payloads(payloads)
    counters = _count(rows)
    with connection.cursor() as cursor:
        with connection.wrap_database_errors:  # COPY runs on the raw cursor: map its errors to Django's
            cursor.cursor.copy_expert(
                f"COPY {AccessEvent._meta.db_table} ({', '.join(_COLUMNS)}) FROM STDIN",
                io.StringIO("".join(_copy_line(row) for row in rows)),
            )
        cursor.execute(
            f"INSERT INTO {EndpointStat._meta.db_table} AS stat ({_COUNTER_COLUMNS}) "
            f"SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::double precision[],"
            f" %s::timestamptz[], %s::double precision[], %s::inet[], %s::text[]) {_COUNTER_CONFLICT}",
            # Sorted by endpoint: concurrent drains lock counter rows in one order and cannot deadlock.
            [list(column) for column in zip(*(counters[name].columns() for name in sorted(counters)), strict=True)],
        )
    return len(rows), min((row.occurred_at for row in rows), default=None)


def _copy_line(row: _Row) -> str:
    """One row of COPY's text format, in _COLUMNS order (called per event: kept to one f-string)."""
    event_id, endpoint, method, status_code, is_error, duration_ms, client_ip, user_agent, pod_name, country, at = row
    line = (
        f"{event_id}\t{endpoint}\t{method}\t{_NULL if status_code is None else status_code}\t"
        f"{'t' if is_error else 'f'}\t{_NULL if duration_ms is None else duration_ms}\t"
        f"{_NULL if client_ip is None else client_ip}\t{user_agent}\t{pod_name}\t{country}\t{at.isoformat()}"
    )
    texts = f"{event_id}{endpoint}{method}{client_ip}{user_agent}{pod_name}{country}"
    if "\\" in texts or "\n" in line or "\r" in line or line.count("\t") != len(_COLUMNS) - 1:
        # Rare: a value holds a tab, newline or backslash. Escape value by value.
        line = "\t".join(_copy_value(value) for value in row)
    return line + "\n"


_NULL = r"\N"


def _copy_value(value: object) -> str:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# The staging tables of a transaction. They have no statistics, so the planner guesses huge row
# counts and would JIT-compile the statements: ~50 ms per batch for nothing. Local to the transaction.
_CREATE_STAGING = (
    "SET LOCAL jit = off;"
    "CREATE TEMP TABLE IF NOT EXISTS tracker_incoming_payload (payload jsonb) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tracker_incoming_event ON COMMIT DELETE ROWS AS "
    f"SELECT {', '.join(_COLUMNS)} FROM {AccessEvent._meta.db_table} WITH NO DATA"
)


def store_copy_lines(lines: list[str]) -> int:
    """PostgreSQL, for generated data (manage.py generate_events): events already as COPY text lines
    in _COLUMNS order (countries given, no endpoint cap, addresses as they are), stored idempotently
    by event id and added to the counters by the drain's own statement. Returns how many were new.
    Call inside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute(_CREATE_STAGING)
        with connection.wrap_database_errors:  # COPY runs on the raw cursor: map its errors to Django's
            cursor.cursor.copy_expert(
                f"COPY tracker_incoming_event ({', '.join(_COLUMNS)}) FROM STDIN", io.StringIO("".join(lines))
            )
        cursor.execute(_INSERT_AND_COUNT)
        stored, _ = cursor.fetchone()
    return int(stored)


def _merge_payloads(payloads: list[bytes | str]) -> tuple[int, datetime | None]:
    """The idempotent path: COPY the JSON into a temp table, let the database parse it, insert
    only events not yet stored (ON CONFLICT) and fold exactly those into the counters."""
    data = b"\n".join(payload if isinstance(payload, bytes) else payload.encode() for payload in payloads)
    if b"\r" in data or data.count(b"\n") != len(payloads) - 1:
        raise DataError("a buffered payload spans more than one line")
    with connection.cursor() as cursor:
        cursor.execute(_CREATE_STAGING)
        with connection.wrap_database_errors:  # COPY runs on the raw cursor: map its errors to Django's
            cursor.cursor.copy_expert(_COPY_PAYLOADS, io.BytesIO(data))
        cursor.execute(_DISTINCT_VALUES)
        distinct = cursor.fetchall()
        addresses = [value for kind, value, _ in distinct if kind == "address"]
        endpoints = [value for kind, value, _ in distinct if kind == "endpoint"]
        located = _located_addresses(addresses)
        columns = [[row[i] for row in located] for i in range(3)]  # addresses, countries, stored addresses
        overflowing = sorted(_overflowing_endpoints(endpoints))
        cursor.execute(_STAGE, [*columns, overflowing, settings.TRACKING_OVERFLOW_ENDPOINT])
        cursor.execute(_INSERT_AND_COUNT)
        stored, oldest = cursor.fetchone()
        return int(stored), oldest


def _located_addresses(addresses: list[str]) -> list[tuple[str, str, str | None]]:
    """(address, country, address as stored) for the addresses that get a country or are changed.

    An invalid address is left out: the database's cast then refuses it, and its batch.
    """
    return [
        (address, country, stored)
        for address, (country, stored) in _locate(addresses).items()
        if country or stored != address
    ]


def store_with_orm(events: list[Event]) -> int:
    """Portable path (the embedded SQLite default): skip known ids, bulk insert, F() counters."""
    events = _cap_endpoints(_locate_and_protect(events))
    ids = [event.event_id for event in events]
    seen = {uuid.hex for uuid in AccessEvent.objects.filter(event_id__in=ids).values_list("event_id", flat=True)}
    fresh: dict[str, Event] = {}
    for event in events:
        if event.event_id not in seen:
            fresh.setdefault(event.event_id, event)
    AccessEvent.objects.bulk_create(AccessEvent(**_fields(event)) for event in fresh.values())
    for endpoint, counter in sorted(_count(list(fresh.values())).items()):  # one lock order
        stat, _ = EndpointStat.objects.get_or_create(endpoint=endpoint)
        changes: dict[str, object] = {
            "access_count": F("access_count") + counter.access_count,
            "success_count": F("success_count") + counter.success_count,
            "error_count": F("error_count") + counter.error_count,
            "total_response_time_ms": F("total_response_time_ms") + counter.total_response_time_ms,
        }
        if stat.last_accessed_at is None or counter.last_accessed_at >= stat.last_accessed_at:
            changes |= {
                "last_accessed_at": counter.last_accessed_at,
                "last_response_time_ms": counter.last_response_time_ms,
                "last_client_ip": counter.last_client_ip,
                "last_pod_name": counter.last_pod_name,
            }
        EndpointStat.objects.filter(pk=stat.pk).update(**changes)
    return len(fresh)


def _fields(event: Event) -> dict[str, object]:
    return {column: getattr(event, column) for column in _COLUMNS}
