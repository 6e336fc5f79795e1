"""Dependency checks for /health and the Kubernetes probes."""

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django_redis import get_redis_connection
from redis import Redis
from redis.exceptions import RedisError, ResponseError

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


# --- Redis persistence ---------------------------------------------------------------------------
# The event buffer lives in Redis until the drain stores it: what a Redis crash loses depends on how
# Redis persists (README, "What a Redis crash loses"). Checked at start (logged), on /health and /metrics.
PERSISTENCE_CHECK_SECONDS = 60.0
_persistence: tuple[float, str] | None = None


def redis_persistence(*, fresh: bool = False) -> str:
    """How Redis keeps the buffer across a crash: "aof-everysec" (or aof-always / aof-no), "rdb"
    (snapshots only), "none", "unknown" (CONFIG is refused, e.g. a managed Redis), "down", or
    "not configured". Cached for PERSISTENCE_CHECK_SECONDS so probes stay one PING each."""
    global _persistence
    if not settings.REDIS_URL:
        return "not configured"
    now = time.monotonic()
    if not fresh and _persistence is not None and now - _persistence[0] < PERSISTENCE_CHECK_SECONDS:
        return _persistence[1]
    try:
        mode = _read_persistence(get_redis_connection("default"))
    except RedisError:
        return "down"  # not cached: the next call asks again
    except Exception:  # e.g. a cluster client answering per node: say so rather than fail /health
        logger.exception("Could not read Redis' persistence settings")
        mode = "unknown"
    _persistence = (now, mode)
    return mode


def _read_persistence(client: Redis) -> str:

    try:
        config = {name: str(client.config_get(name).get(name, "")) for name in ("appendonly", "appendfsync", "save")}
    except ResponseError:  # CONFIG renamed or refused: INFO still says whether AOF is on
        return "aof" if int(client.info("persistence").get("aof_enabled", 0)) else "unknown"
    if config["appendonly"] == "yes":
        return f"aof-{config['appendfsync'] or 'everysec'}"
    return "rdb" if config["save"].strip() else "none"


def log_redis_persistence() -> str:
    """Say at start how much a Redis crash could lose: an ERROR line when nothing is persisted."""
    mode = redis_persistence(fresh=True)
    if mode == "none":
        logger.error(
            "Redis has NO persistence (appendonly no, no save points): a Redis crash or restart loses every "
            "buffered event not yet drained, silently. Run Redis with --appendonly yes --appendfsync everysec "
            "as deploy/kustomize does."
        )
    elif mode in {"rdb", "aof-no", "unknown"}:
        logger.warning(
            "Redis persistence is %s: a Redis crash can lose the events buffered since the last snapshot or "
            "fsync. --appendonly yes --appendfsync everysec bounds the loss to about one second.",
            mode,
        )
    else:
        logger.info("Redis persistence: %s", mode)
    return mode
