"""GET /metrics for the web and limiter roles: every gunicorn worker's metrics in one scrape."""

import logging
import os
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class BufferDepthCollector:
    """Events in the Redis buffer and the drain lag, read at scrape time (one pipelined round trip)."""

    def collect(self) -> Iterator[Metric]:
        if not settings.REDIS_URL:
            return
        from tracker import buffer

        try:
            shards = buffer.shard_depths()
        except RedisError:
            return
        family = GaugeMetricFamily(
            "endpointstats_buffer_events",
            "Events in the Redis buffer, summed over shards: queued (not yet read), pending (read by a drain,"
            " not yet acknowledged), dead (unreadable, parked).",
            labels=["list"],
        )
        for name in ("queued", "pending", "dead"):
            family.add_metric([name], sum(getattr(shard, name) for shard in shards))
        yield family
        yield GaugeMetricFamily(
            "endpointstats_buffer_oldest_event_age_seconds",
            "Age of the oldest buffered event not yet acknowledged by a drain (0 when the buffer is empty).",
            value=max((shard.oldest_age_seconds or 0.0 for shard in shards), default=0.0),
        )


class RedisPersistenceCollector:
    """endpointstats_redis_persistent{mode}: 1 when a Redis crash keeps the buffer (AOF or snapshots), else 0."""

    def collect(self) -> Iterator[Metric]:
        from tracker import health

        mode = health.redis_persistence()
        if mode in {"not configured", "down"}:
            return
        family = GaugeMetricFamily(
            "endpointstats_redis_persistent",
            "1 if Redis persists the event buffer (AOF or RDB snapshots), 0 if a Redis crash loses all of it.",
            labels=["mode"],
        )
        family.add_metric([mode], 0 if mode == "none" else 1)
        yield family


class BackupCollector:
    """endpointstats_backup_last_success_timestamp_seconds, read at scrape time (absent before the first)."""

    def collect(self) -> Iterator[Metric]:
        from analytics import backups

        timestamp = backups.last_success_timestamp()
        if timestamp is None:
            return
        yield GaugeMetricFamily(
            "endpointstats_backup_last_success_timestamp_seconds",
            "Unix time of the newest successful database backup.",
            value=timestamp,
        )


def metrics(request: HttpRequest) -> HttpResponse:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if settings.ROLE == "web":
        extra = CollectorRegistry()
        extra.register(BufferDepthCollector())
        extra.register(BackupCollector())
        extra.register(RedisPersistenceCollector())
        body += generate_latest(extra)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
