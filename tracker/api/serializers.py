"""Output serializers. WelcomeOutput and StatsOutput (hot paths) only describe the responses in
the OpenAPI schema: the views render plain dicts (tracker.queries builds the /stats rows)."""

from rest_framework import serializers

from tracker.models import EndpointStat


class WelcomeOutput(serializers.Serializer):
    message = serializers.CharField()
    pod = serializers.CharField()
    timestamp = serializers.DateTimeField()
    from_cache = serializers.BooleanField()


class EndpointStatOutput(serializers.Serializer):
    endpoint = serializers.CharField()
    access_count = serializers.IntegerField()
    success_count = serializers.IntegerField()
    error_count = serializers.IntegerField()
    last_accessed = serializers.DateTimeField(source="last_accessed_at", allow_null=True)
    response_time = serializers.SerializerMethodField(help_text="Last response time, in seconds.")
    avg_response_time = serializers.SerializerMethodField(help_text="Mean response time, in seconds.")
    success_rate = serializers.FloatField(help_text="Percent of requests without a server error.")
    pod_name = serializers.CharField(source="last_pod_name")

    def get_response_time(self, stat: EndpointStat) -> float | None:
        return None if stat.last_response_time_ms is None else stat.last_response_time_ms / 1000.0

    def get_avg_response_time(self, stat: EndpointStat) -> float | None:
        return None if stat.avg_response_time_ms is None else stat.avg_response_time_ms / 1000.0


class StatsOutput(serializers.Serializer):
    endpoints = EndpointStatOutput(many=True)
    from_cache = serializers.BooleanField()


class HealthOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    database = serializers.CharField()
    redis = serializers.CharField()
    redis_persistence = serializers.CharField(
        help_text="aof-everysec, aof-always, aof-no, rdb, none, unknown (what a Redis crash can lose: README)"
    )
    hostname = serializers.CharField()
    timestamp = serializers.DateTimeField()
