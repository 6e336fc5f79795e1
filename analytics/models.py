"""Analytics tables: API tokens for /collect, and rollups of tracker_accessevent that outlive it."""

from django.db import models


class ApiToken(models.Model):
    """A bearer token that lets another service POST /collect.

    Only the SHA-256 of the token is stored: the token itself is shown once, when it is
    created in the admin. A revoked token (revoked_at set) is refused from then on.
    """

    name = models.CharField(max_length=100, help_text="Who uses it, e.g. the calling service.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise it.")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class HourlyStat(models.Model):
    """Everything /analytics needs about one endpoint in one hour, computed from raw events.

    Written only by services.aggregation.aggregate_hour (an upsert: recomputing an hour replaces its
    rows, never adds to them). latency_histogram and client_sketch are mergeable, so any
    run of hours gives a p95 within 1.5% and a unique-client estimate within a few percent.
    """

    endpoint = models.CharField(max_length=200)
    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    access_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    avg_response_time_ms = models.FloatField(null=True, blank=True)
    p95_response_time_ms = models.FloatField(null=True, blank=True)
    unique_clients = models.IntegerField(default=0, help_text="Exact, within the hour.")
    last_accessed_at = models.DateTimeField(null=True, blank=True)
    # The row summarises raw events in [hour, covered_until): the hour's end once complete, an
    # earlier moment while the hour is still running (live aggregation); raw events answer after it.
    covered_until = models.DateTimeField()
    # Sum of the durations that were reported, for exact means over any run of hours.
    total_response_time_ms = models.FloatField(default=0)
    timed_count = models.BigIntegerField(default=0, help_text="Events with a duration.")
    latency_histogram = models.BinaryField(default=b"", help_text="Sparse log-bucket counts, see analytics.sketches.")
    client_sketch = models.BinaryField(default=b"", help_text="HyperLogLog registers of client addresses.")
    country_counts = models.JSONField(default=dict, help_text="Events per ISO country code ('' = unknown).")
    # The running hour, advanced by live aggregation: the row holds only the events with an id up
    # to this one (see AggregationWatermark). Null: it holds every event stored when it was computed.
    covered_event_id = models.BigIntegerField(null=True, blank=True)
    # For the admin console, so its overview never reads raw events.
    client_error_count = models.BigIntegerField(default=0, help_text="4xx responses, 429 included.")
    throttled_count = models.BigIntegerField(default=0, help_text="429 responses: rate-limit refusals.")
    top_clients = models.JSONField(default=dict, help_text="Requests of the busiest client addresses.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "hour"], name="hourlystat_unique_endpoint_hour")]
        indexes = [models.Index(fields=["hour", "endpoint"], name="hourlystat_hour_endpoint")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.hour:%Y-%m-%d %H:00}"


class MergedRollup(models.Model):
    """The mergeable summary of one endpoint's rollups over a span: what DailyStat and RangeStat hold."""

    endpoint = models.CharField(max_length=200)
    access_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    total_response_time_ms = models.FloatField(default=0)
    timed_count = models.BigIntegerField(default=0)
    last_accessed_at = models.DateTimeField(null=True, blank=True)
    latency_histogram = models.BinaryField(default=b"")
    client_sketch = models.BinaryField(default=b"")

    class Meta:
        abstract = True


class DailyStat(MergedRollup):
    """The merge of one endpoint's HourlyStat rows of one UTC day (same meaning, coarser).

    Rebuilt from the HourlyStat rows whenever an hour of that day is aggregated, so long
    periods read 30 rows per endpoint instead of 720.
    """

    day = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "day"], name="dailystat_unique_endpoint_day")]
        indexes = [models.Index(fields=["day", "endpoint"], name="dailystat_day_endpoint")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.day}"


class RangeStat(MergedRollup):
    """The merge of one endpoint's rollups over [start, end): a pre-merged run of hours or days.

    Long periods are answered from a few of these instead of one row per hour or day (see
    analytics.rollup_ranges for which runs exist: within each UTC day, the first k and the last k
    hours; within each 16-day block and its aligned halves, quarters and eighths, the first k and
    the last k days). Rebuilt, in the same
    transaction, whenever a complete hour they hold is aggregated again, so a run never goes stale
    while it can be read; only recent ones are kept (periods reach back 30 days).
    """

    start = models.DateTimeField()
    end = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["start", "end", "endpoint"], name="rangestat_unique_start_end_endpoint")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.start:%Y-%m-%d %H:00} .. {self.end:%Y-%m-%d %H:00}"


class GeoStat(models.Model):
    """Requests per country, endpoint and UTC day (country '' = unknown, private or loopback).

    Rebuilt from the day's HourlyStat rows with the DailyStat, so it is idempotent too.
    """

    day = models.DateField()
    endpoint = models.CharField(max_length=200)
    country = models.CharField(max_length=2, blank=True, default="", help_text="ISO 3166-1 alpha-2.")
    access_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "endpoint", "country"], name="geostat_unique_day_endpoint_country")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.endpoint} {self.country or '??'}"


class AggregationWatermark(models.Model):
    """How far live aggregation has read the stream of stored events (one row, name "live").

    AccessEvent ids come from one sequence as rows are inserted, so they order events by
    ingestion. event_id: every event with an id up to it is in the rollups (its hour was
    advanced or aggregated again); null before the first run. An id is trusted only once no
    transaction that could still commit a smaller id is running: pending_* is the candidate
    (the sequence's value, the transactions of this database running just after it was read,
    as "pid:xid,...", and the moment the rollups would then cover up to).
    """

    name = models.CharField(max_length=50, unique=True)
    event_id = models.BigIntegerField(null=True, blank=True)
    pending_event_id = models.BigIntegerField(null=True, blank=True)
    pending_writers = models.TextField(blank=True, default="")
    pending_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}: events up to {self.event_id}"
