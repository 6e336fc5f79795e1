"""The tracked event as it travels through the buffer: a small dataclass and its JSON codec."""

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Event:
    """One served request (or one event sent to /collect), before it is stored."""

    endpoint: str
    occurred_at: datetime
    method: str = ""
    status_code: int | None = None
    is_error: bool = False
    duration_ms: float | None = None
    client_ip: str | None = None
    user_agent: str = ""
    pod_name: str = ""
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.timestamp()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, payload: str | bytes) -> "Event":
        """Decode a buffered event; raises ValueError (or KeyError/TypeError) if it is malformed."""
        data = json.loads(payload)
        data["occurred_at"] = datetime.fromtimestamp(float(data["occurred_at"]), tz=UTC)
        data["event_id"] = uuid.UUID(data["event_id"]).hex
        return cls(**data)

    def with_endpoint(self, endpoint: str) -> "Event":
        return Event(**{**asdict(self), "endpoint": endpoint})
