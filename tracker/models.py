from django.db import models


class EndpointStat(models.Model):
    """Running counters for one endpoint (a resolved route, never a raw path).

    Written only by the drain, with one upsert per endpoint per batch, so counts are
    exact under any number of web replicas. access_count = success_count + error_count.
    """

    endpoint = models.CharField(max_length=200, unique=True)
    access_count = models.BigIntegerField(default=0)
    success_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    total_response_time_ms = models.FloatField(default=0, help_text="Sum over all requests, for the mean.")
    last_accessed_at = models.DateTimeField(null=True, blank=True)
    last_response_time_ms = models.FloatField(null=True, blank=True)
    last_client_ip = models.GenericIPAddressField(null=True, blank=True)
    last_pod_name = models.CharField(max_length=253, blank=True, default="")

    class Meta:
        ordering = ["endpoint"]

    def __str__(self) -> str:
        return self.endpoint

    @property
    def success_rate(self) -> float:
        """Percent of requests that succeeded; 100 before the first request (as the reference)."""
        return 100.0 * self.success_count / self.access_count if self.access_count else 100.0

    @property
    def avg_response_time_ms(self) -> float | None:
        return self.total_response_time_ms / self.access_count if self.access_count else None


class AccessEvent(models.Model):
    """One request to one endpoint, as tracked by the web role or sent to /collect.

    event_id is assigned when the request is served, so a batch re-delivered after a
    crash is recognised and never stored or counted twice. The uniqueness includes
    occurred_at so the table can be partitioned by time without losing that guarantee.
    """

    event_id = models.UUIDField()
    endpoint = models.CharField(max_length=200)
    method = models.CharField(max_length=10, blank=True, default="")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    is_error = models.BooleanField(default=False)
    duration_ms = models.FloatField(null=True, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True, default="")
    pod_name = models.CharField(max_length=253, blank=True, default="")
    # ISO 3166-1 alpha-2 from client_ip at drain time ('' = unknown/private), before privacy applies.
    country = models.CharField(max_length=2, blank=True, default="")
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event_id", "occurred_at"], name="accessevent_unique_event"),
        ]
        indexes = [
            # Time-range queries per endpoint (stats, timeseries, rollups).
            models.Index(fields=["endpoint", "occurred_at"], name="accessevent_endpoint_time"),
            # Time-range queries over all endpoints (hourly rollups, pruning), and the admin's newest-first
            # list. A btree, not BRIN: BRIN cannot return rows in order, and the admin list then sorted whole
            # partitions (0.1 ms -> 1.9 s at 4.8M rows; docs/PERFORMANCE.md, Partitions).
            models.Index(fields=["occurred_at"], name="accessevent_time"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} {self.status_code} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"
