"""The cache of merged complete hours (Redis; the only cache writes of analytics reads live here).

A merge of complete hours changes only when a complete hour is re-aggregated, which replaces the
generation in every key (forget), so a hit is never stale. Redis down: computed every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from analytics.summaries import Summary, pack_summaries, unpack_summaries

GENERATION_KEY = "analytics:rollup-generation"


def forget() -> None:
    """Invalidate every cached merge (called once a rewritten complete hour is committed)."""
    with contextlib.suppress(RedisError):
        cache.set(GENERATION_KEY, uuid.uuid4().hex, None)


def get_or_compute(
    *, start: datetime, end: datetime, endpoint: str | None, compute: Callable[[], dict[str, Summary]]
) -> tuple[dict[str, Summary], bool]:
    """The cached merge of complete hours [start, end) for `endpoint` (None: all), computing and
    storing it on a miss. Returns (summaries, computed: True on a miss)."""
    key = None
    with contextlib.suppress(RedisError):
        generation = cache.get(GENERATION_KEY)
        if generation is None:
            cache.add(GENERATION_KEY, uuid.uuid4().hex, None)
            generation = cache.get(GENERATION_KEY)
        who = hashlib.sha1((endpoint or "*").encode(), usedforsecurity=False).hexdigest()
        # "packed-rollups" (was "rollups", before that "rollup"): entries stored in an earlier form
        # (whole Summary objects) are never read.
        key = f"analytics:packed-rollups:{generation}:{int(start.timestamp())}:{int(end.timestamp())}:{who}"
        cached = cache.get(key)
        if cached is not None:
            return unpack_summaries(cached), False
    summaries = compute()
    if key is not None:
        with contextlib.suppress(RedisError):
            cache.set(key, pack_summaries(summaries), settings.ANALYTICS_CACHE_SECONDS)
    return summaries, True
