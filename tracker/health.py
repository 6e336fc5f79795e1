"""Dependency checks for /health and the Kubernetes probes."""

import logging

from django.conf import settings
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from tracker import buffer

logger = logging.getLogger(__name__)


def database_status() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        logger.error("Database health check failed: %s", error)
        return "down"
    return "up"


def redis_status() -> str:
    """ "up", "down", or "not configured" on the embedded default (no Redis needed there)."""
    if not settings.REDIS_URL:
        return "not configured"
    try:
        buffer.connection().ping()
    except RedisError as error:
        logger.error("Redis health check failed: %s", error)
        return "down"
    return "up"
