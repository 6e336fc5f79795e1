"""Input validation for /collect and /analytics/*, and the output shapes (for the API schema)."""

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from analytics import periods
from tracker.api.schema import OptionalIPAddressField
from tracker.events import Event

CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of our clock a sender's timestamp may be
# Endpoint names as a URL path carries them (RFC 3986 path characters) plus the <> and {} of route
# templates: no spaces, quotes, backslashes, control or escape characters (they are shown on /stats).
ENDPOINT_MAX_LENGTH = 200
ENDPOINT_CHARACTERS = r"A-Za-z0-9\-._~!$&()*+,;=:@%/<>{}"
ENDPOINT_PATTERN = rf"^/[{ENDPOINT_CHARACTERS}]*$"
ENDPOINT_RULE = (
    f"Start with / and use at most {ENDPOINT_MAX_LENGTH} characters of: "
    "letters, digits, / and - . _ ~ ! $ & ( ) * + , ; = : @ % < > { }"
)
_ENDPOINT_FULL = re.compile(rf"/[{ENDPOINT_CHARACTERS}]*")  # fullmatch: `$` would let a final newline in
PERIOD_CHOICES = list(periods.PERIODS)
INTERVAL_CHOICES = list(periods.INTERVALS)


@extend_schema_field(
    {
        "type": "string",
        "pattern": ENDPOINT_PATTERN,
        "maxLength": ENDPOINT_MAX_LENGTH,
        "description": ENDPOINT_RULE + ", e.g. /orders/{id}.",
    }
)
class EndpointNameField(serializers.CharField):
    """An endpoint name as /collect accepts it (checked in CollectEventInput.validate_endpoint)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)


class CollectEventInput(serializers.Serializer):
    """One event sent to /collect, with the reference design's fields."""

    endpoint = EndpointNameField(max_length=ENDPOINT_MAX_LENGTH)
    timestamp = serializers.DateTimeField(
        help_text="ISO 8601; without an offset it is UTC. Not older than the retention "
        "(ANALYTICS_RETENTION_DAYS), at most 5 minutes ahead."
    )
    response_time = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=86400, help_text="Seconds."
    )
    client_ip = OptionalIPAddressField(required=False, allow_null=True, allow_blank=True)
    user_agent = serializers.CharField(required=False, allow_blank=True, allow_null=True, trim_whitespace=False)
    pod_name = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=253)
    is_error = serializers.BooleanField(required=False, default=False)

    def validate_endpoint(self, value: str) -> str:
        if not _ENDPOINT_FULL.fullmatch(value):
            raise serializers.ValidationError(ENDPOINT_RULE + ".")
        return value

    def validate_timestamp(self, value: datetime) -> datetime:
        now = timezone.now()
        if value > now + CLOCK_SKEW:
            raise serializers.ValidationError("Is in the future; send the time the request was served (UTC).")
        if value < now - timedelta(days=settings.ANALYTICS_RETENTION_DAYS):
            raise serializers.ValidationError(
                f"Is older than the retention ({settings.ANALYTICS_RETENTION_DAYS} days): such events are not kept."
            )
        return value

    def to_internal_value(self, data: Mapping[str, Any]) -> dict[str, Any]:
        # JSON types as the schema states them: DRF alone would take "1.5" for a number, 0 for false.
        wrong = {
            name: [f"Must be a JSON {kind}."]
            for name, (types, kind) in _JSON_TYPES.items()
            if data.get(name) is not None and (not isinstance(data[name], types) or _bool_as_number(data[name], types))
        }
        if wrong:
            raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)

    @staticmethod
    def to_event(data: dict) -> Event:
        seconds = data.get("response_time")
        return Event(
            endpoint=data["endpoint"],
            occurred_at=data["timestamp"],
            is_error=bool(data.get("is_error")),
            duration_ms=None if seconds is None else seconds * 1000.0,
            client_ip=data.get("client_ip") or None,
            user_agent=(data.get("user_agent") or "")[: settings.TRACKING_USER_AGENT_MAX_LENGTH],
            pod_name=data.get("pod_name") or "",
        )


_JSON_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "endpoint": (str, "string"),
    "timestamp": (str, "string"),
    "response_time": ((int, float), "number"),
    "client_ip": (str, "string"),
    "user_agent": (str, "string"),
    "pod_name": (str, "string"),
    "is_error": (bool, "boolean"),
}


def _bool_as_number(value: object, types: type | tuple[type, ...]) -> bool:
    return isinstance(value, bool) and types is not bool


class CollectOutput(serializers.Serializer):
    status = serializers.CharField()
    accepted = serializers.IntegerField()


def _choice(name: str, choices: list[str], default: str, help_text: str | None = None) -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=choices,
        default=default,
        help_text=help_text,
        error_messages={"invalid_choice": f'"{{input}}" is not a valid {name}; use one of: {", ".join(choices)}.'},
    )


class StatsParams(serializers.Serializer):
    """The query parameters of every /analytics read (the OpenAPI parameters come from here too)."""

    endpoint = serializers.CharField(required=False, max_length=200, help_text="One endpoint (default: all).")
    period = _choice("period", PERIOD_CHOICES, "24h")

    def to_internal_value(self, data: Mapping[str, Any]) -> dict[str, Any]:
        # A parameter given empty (`period=`) is a mistake, not a request for the default.
        names = [name for name, _ in self.fields.items()]  # the stubs type iterating a BindingDict as its fields
        blank = {name: ["May not be empty: leave it out for the default."] for name in names if data.get(name) == ""}
        # Each parameter is one value (a query string may repeat a name: `offset=1&offset=2` is refused).
        if hasattr(data, "getlist"):
            blank |= {name: ["Give it once."] for name in names if len(data.getlist(name)) > 1}
        if blank:
            raise serializers.ValidationError(blank)
        return super().to_internal_value(data)


_PAGE_LIMIT_MESSAGE = "At most {max_value} rows per page (ANALYTICS_MAX_PAGE_SIZE); ask for the next ones with offset."


class PagedParams(StatsParams):
    """StatsParams and a page: limit rows from offset. A limit over ANALYTICS_MAX_PAGE_SIZE is a 400 that
    says the maximum."""

    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.ANALYTICS_MAX_PAGE_SIZE,  # for the schema; validate_limit reads the setting now
        help_text=f"Rows per page (default ANALYTICS_PAGE_SIZE, {settings.ANALYTICS_PAGE_SIZE}); more than "
        f"ANALYTICS_MAX_PAGE_SIZE ({settings.ANALYTICS_MAX_PAGE_SIZE}) is a 400 that says so.",
        error_messages={"max_value": _PAGE_LIMIT_MESSAGE},
    )
    offset = serializers.IntegerField(
        required=False, min_value=0, default=0, help_text="Rows to skip (the previous answer's next_offset)."
    )

    def validate_limit(self, value: int) -> int:
        if value > settings.ANALYTICS_MAX_PAGE_SIZE:
            raise serializers.ValidationError(_PAGE_LIMIT_MESSAGE.format(max_value=settings.ANALYTICS_MAX_PAGE_SIZE))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        attrs.setdefault("limit", min(settings.ANALYTICS_PAGE_SIZE, settings.ANALYTICS_MAX_PAGE_SIZE))
        return attrs


class TimeseriesParams(StatsParams):
    interval = _choice(
        "interval",
        INTERVAL_CHOICES,
        "1h",
        help_text="5m and 15m only with periods up to 24h (7d and 30d take 1h or 1d); another "
        "combination is a 400. A series of more than ANALYTICS_MAX_POINTS points (buckets x endpoints, "
        "10000 by default) is a 400 that says so: ask for one endpoint or a longer interval.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        allowed = periods.allowed_intervals(attrs["period"])
        if attrs["interval"] not in allowed:
            raise serializers.ValidationError(
                {"interval": [f"With period {attrs['period']} use one of: {', '.join(allowed)}."]}
            )
        return attrs


class AnalyticsEndpointStatsOutput(serializers.Serializer):
    endpoint = serializers.CharField()
    access_count = serializers.IntegerField()
    avg_response_time = serializers.FloatField(allow_null=True, help_text="Seconds.")
    p95_response_time = serializers.FloatField(allow_null=True, help_text="Seconds (within 1.5% for 24h+).")
    last_accessed = serializers.DateTimeField(allow_null=True)
    unique_clients = serializers.IntegerField(
        help_text="Exact under 24h, else a HyperLogLog estimate (0.81% standard error)."
    )
    error_count = serializers.IntegerField()


class PageOutput(serializers.Serializer):
    count = serializers.IntegerField(help_text="Rows in the whole answer, over all pages.")
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    next_offset = serializers.IntegerField(allow_null=True, help_text="The offset of the next page; null on the last.")


class AnalyticsStatsOutput(PageOutput):
    period = serializers.CharField()
    stats = AnalyticsEndpointStatsOutput(many=True)


class TimeseriesPointOutput(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    endpoint = serializers.CharField(required=False, help_text="Only when no endpoint was asked for.")
    access_count = serializers.IntegerField()
    avg_response_time = serializers.FloatField(help_text="Seconds; 0 for an empty bucket.")
    error_count = serializers.IntegerField()


class AnalyticsTimeseriesOutput(serializers.Serializer):
    period = serializers.CharField()
    interval = serializers.CharField()
    timeseries = TimeseriesPointOutput(many=True)


class CountryOutput(serializers.Serializer):
    country_code = serializers.CharField(allow_null=True, help_text="ISO 3166-1 alpha-2; null if unknown/private.")
    access_count = serializers.IntegerField()


class AnalyticsGeoOutput(PageOutput):
    period = serializers.CharField()
    endpoint = serializers.CharField(allow_null=True)
    geo = CountryOutput(many=True)
