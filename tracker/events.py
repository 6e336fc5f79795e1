"""The tracked event as it travels through the buffer: a small dataclass and its JSON codec."""

import os
import re
import time
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime

import orjson


def uuid7_hex(unix_ms: int | None = None) -> str:
    """A new UUIDv7 (RFC 9562) as 32 hex digits: 48 bits of Unix milliseconds, then 74 random bits.

    Ids made later sort after earlier ones (to the millisecond), so inserts append to the end of
    the unique index instead of landing at random pages as UUIDv4 did. Python 3.11 has no uuid7.
    """
    if unix_ms is None:
        unix_ms = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10))  # 80 bits, of which 74 are used
    value = (
        (unix_ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version
        | (random >> 68) << 64  # rand_a: 12 bits
        | 0b10 << 62  # variant
        | random & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    )
    return f"{value:032x}"


@dataclass(frozen=True, slots=True)
class Event:
    """One served request (or one event sent to /collect), before it is stored."""

    endpoint: str
    occurred_at: datetime
    method: str = ""
    # status_code then is_error, adjacent in to_json: the rate limiter's script rewrites the pair to
    # turn a refused request's event into its 429's (ratelimit.services._COUNT_AND_TRACK_SCRIPT).
    status_code: int | None = None
    is_error: bool = False
    duration_ms: float | None = None
    client_ip: str | None = None
    user_agent: str = ""
    pod_name: str = ""
    country: str = ""  # derived at drain time (tracker.geo), before the address is protected
    event_id: str = field(default_factory=uuid7_hex)

    def to_json(self) -> str:
        # Once per request on the hot path, and decoded once per event by the drain: orjson and
        # a flat getattr per field (asdict() deep-copies) keep both well under 5 us (bench_drain).
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["occurred_at"] = self.occurred_at.timestamp()
        return orjson.dumps(data).decode()

    @classmethod
    def from_json(cls, payload: str | bytes) -> "Event":
        """Decode a buffered event; raises ValueError (or KeyError/TypeError) if it is malformed."""
        data = orjson.loads(payload)  # orjson.JSONDecodeError is a ValueError
        data["occurred_at"] = datetime.fromtimestamp(float(data["occurred_at"]), tz=UTC)
        event_id = data["event_id"]
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be a string, not {type(event_id).__name__}")
        if not _UUID_HEX.fullmatch(event_id):  # the usual spelling passes as is; others are normalised
            data["event_id"] = uuid.UUID(event_id).hex
        return cls(**data)

    def with_endpoint(self, endpoint: str) -> "Event":
        return replace(self, endpoint=endpoint)


_FIELD_NAMES = tuple(f.name for f in fields(Event))
_UUID_HEX = re.compile(r"[0-9a-f]{32}")
