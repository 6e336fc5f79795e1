from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from ratelimit.queries import LimitsInForce
from ratelimit.rules import MAX_ENDPOINT_LENGTH, Rate, Rule
from tracker.api.schema import IPAddressField


class CheckParams(serializers.Serializer):
    """Query parameters of GET /check. Unknown parameters are refused, not ignored (a typo would count
    every caller under one default bucket)."""

    endpoint = serializers.RegexField(
        r"^/",
        max_length=MAX_ENDPOINT_LENGTH,
        error_messages={"invalid": 'An endpoint starts with "/", e.g. /stats.'},
        help_text="The endpoint, e.g. /stats.",
    )
    client_ip = IPAddressField(help_text="The calling client's IP address (IPv4 or IPv6).")

    def to_internal_value(self, data: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown parameter; /check takes endpoint and client_ip."] for name in unknown}
            )
        return super().to_internal_value(data)


class CheckAllowedOutput(serializers.Serializer):
    allowed = serializers.BooleanField()
    limit = serializers.IntegerField()
    current = serializers.IntegerField(help_text="Requests counted in this window, this one included.")
    remaining = serializers.IntegerField()
    reset_after = serializers.IntegerField(required=False, help_text="Seconds until the window ends.")
    shadow = serializers.BooleanField(required=False, help_text="Present when only a dry run let it through.")
    redis_status = serializers.CharField(required=False, help_text="Present when the counters were unreachable.")


class CheckRefusedOutput(serializers.Serializer):
    allowed = serializers.BooleanField()
    limit = serializers.IntegerField()
    current = serializers.IntegerField()
    reset_after = serializers.IntegerField(help_text="Seconds until the window ends (also in Retry-After).")
    redis_status = serializers.CharField(required=False)


class RateOutput(serializers.Serializer):
    rate = serializers.SerializerMethodField()
    limit = serializers.IntegerField()
    window_seconds = serializers.IntegerField()

    def get_rate(self, rate: Rate) -> str:
        return str(rate)


class RuleOutput(serializers.Serializer):
    rate = serializers.SerializerMethodField()
    limit = serializers.IntegerField(source="rate.limit")
    window_seconds = serializers.IntegerField(source="rate.window_seconds")
    burst = RateOutput(allow_null=True)
    shadow = serializers.BooleanField()

    def get_rate(self, rule: Rule) -> str:
        return str(rule.rate)


class LimitsOutput(serializers.Serializer):
    rate_limits = serializers.SerializerMethodField()
    source = serializers.CharField(source="rules.source")  # type: ignore[assignment]  # the output's "source", not Field.source
    loaded_at = serializers.DateTimeField(source="rules.loaded_at")
    last_error = serializers.CharField(allow_null=True, help_text="Why the latest rules file was rejected.")
    shadow = serializers.BooleanField(help_text="Global dry run (RATELIMIT_SHADOW).")
    fail_open = serializers.BooleanField(help_text="Requests pass when Redis is unreachable.")
    exempt_paths = serializers.ListField(child=serializers.CharField())

    def get_rate_limits(self, limits: LimitsInForce) -> dict:
        return {endpoint: RuleOutput(rule).data for endpoint, rule in limits.rules.rules.items()}


class LimiterHealthOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    redis = serializers.CharField()
    hostname = serializers.CharField()
    timestamp = serializers.DateTimeField()
    rate_limits = serializers.DictField(child=serializers.CharField(), help_text="endpoint -> rate")
