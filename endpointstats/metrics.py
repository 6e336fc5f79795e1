"""GET /metrics for the web and limiter roles: every gunicorn worker's metrics in one scrape."""

import logging
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class BufferDepthCollector:
    """Events waiting in the Redis buffer, read at scrape time (one pipelined round trip)."""

    def collect(self):
        if not settings.REDIS_URL:
            return
        from tracker import buffer

        try:
            depth = buffer.depth()
        except RedisError:
            return
        family = GaugeMetricFamily(
            "endpointstats_buffer_events", "Events waiting in the Redis buffer, by list.", labels=["list"]
        )
        for name, value in depth.items():
            family.add_metric([name], value)
        yield family


class BackupCollector:
    """endpointstats_backup_last_success_timestamp_seconds, read at scrape time (absent before the first)."""

    def collect(self):
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
        body += generate_latest(extra)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
