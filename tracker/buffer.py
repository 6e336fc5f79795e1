"""The Redis event buffer between the web role and PostgreSQL: sharded Redis Streams.

The buffer is BUFFER_SHARDS streams. Each web process appends to one shard, picked by a stable
hash of its pod name and pid, with one XADD per event (all of a call's events in one round trip).
Drains read a shard through the consumer group "drain" (XREADGROUP), store what they read, and only
after the database commit acknowledge and delete it (XACK + XDEL in one MULTI/EXEC). What a drain read
but never acknowledged (it was killed, or stalled) stays in the group's pending list; after
DRAIN_CLAIM_IDLE_SECONDS another drain takes it over with XAUTOCLAIM. That is at-least-once
delivery, made exact by the idempotent insert keyed by event id. Nothing is ever trimmed: an
entry leaves its stream only when it is acknowledged or parked.

Each shard's keys (stream, dead letters, drain lock) share one hash tag, so on Redis Cluster every
multi-key transaction or script stays in one slot. At most one drain works on a shard at a time (a
per-shard lock); drains on different shards run in parallel. Every command moves at most CHUNK
entries, so no single command holds Redis for long (bench_drain measures the longest with SLOWLOG).
"""

import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis import get_redis_connection
from redis.exceptions import ResponseError
from redis.lock import Lock

from tracker import redis_direct
from tracker.hotsettings import snapshot

GROUP = "drain"
FIELD = b"e"  # each stream entry holds one encoded event under this field
# Entries per Redis command (read, claim, acknowledge, park, replay). Redis runs one command at a time,
# so a web process's XADD waits for the drain command in progress: 500 entries of ~300 bytes took
# ~1.5 ms of server time and doubled the web write p99 while drains ran (bench_drain); 100 keep each
# command near 0.3 ms for more round trips (a few µs per event, see docs/PERFORMANCE.md).
CHUNK = 100

Entry = tuple[bytes, bytes]  # (stream id, payload)


@dataclass(frozen=True)
class ShardDepth:
    shard: int
    queued: int  # not yet read by any drain
    pending: int  # read by a drain, not yet acknowledged
    dead: int  # parked: unreadable
    oldest_age_seconds: float | None  # age of the oldest unacknowledged event (None: shard empty)


@dataclass(frozen=True)
class DeadLetter:
    shard: int
    id: str  # its id in the shard's dead-letter stream (the time it was parked)
    parked_at: float  # Unix time
    payload: bytes


def connection() -> Any:
    # Any, not redis.Redis: redis-py types every reply as the union of all its decode modes (and
    # None); this client never decodes, so replies are bytes, as the callers treat them.
    return get_redis_connection("default")


@snapshot  # read on every tracked request
def shard_count() -> int:
    return settings.BUFFER_SHARDS


def _key(shard: int, name: str) -> str:
    # The hash tag {buffer-N} keeps a shard's keys in one Redis Cluster slot; the cache's key
    # prefix keeps tests (and co-tenant deployments) apart.
    return cache.make_key(f"tracker:{{buffer-{shard}}}:{name}")


def stream_key(shard: int) -> str:
    return _key(shard, "events")


def dead_letter_key(shard: int) -> str:
    return _key(shard, "dead")


_local_shard: tuple[int, int, int, str] | None = None  # (pid, shard count, shard, its stream key)


def local_shard() -> int:
    """The shard this process writes to: a stable hash of pod name and pid (recomputed after a fork)."""
    return _local()[2]


def local_stream_key() -> str:
    """The stream this process appends to (once per request: worked out once per process)."""
    return _local()[3]


def _local() -> tuple[int, int, int, str]:
    global _local_shard
    pid, count = os.getpid(), shard_count()
    if _local_shard is None or _local_shard[:2] != (pid, count):
        shard = zlib.crc32(f"{settings.POD_NAME}:{pid}".encode()) % count
        _local_shard = (pid, count, shard, stream_key(shard))
    return _local_shard


@receiver(setting_changed)
def _forget_local_shard(*, setting: str, **kwargs: object) -> None:
    global _local_shard
    if setting in ("CACHES", "POD_NAME"):  # tests change the key prefix and the pod name
        _local_shard = None


def push(payloads: list[str] | list[bytes], *, shard: int | None = None) -> None:
    """Append encoded events to this process's shard (or the given one) in one round trip.

    Raises redis.RedisError if Redis is unreachable. No MAXLEN: trimming could drop events
    no drain has stored yet.
    """
    client, stream = connection(), local_stream_key() if shard is None else stream_key(shard)
    if len(payloads) == 1:
        if redis_direct.supports(client):  # the request path: one event, least CPU
            redis_direct.command(client, "XADD", stream, "*", FIELD, payloads[0])
        else:
            client.xadd(stream, {FIELD: payloads[0]})
        return
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(stream, {FIELD: payload})
    pipe.execute()


def ensure_group(shard: int) -> None:
    """Create the shard's consumer group (and stream) if missing; from id 0 so nothing pushed before is skipped."""
    try:
        connection().xgroup_create(stream_key(shard), GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def read(*, shard: int, consumer: str, count: int, claim_idle_seconds: float) -> list[Entry]:
    """Up to `count` entries for this consumer, oldest first: first those another drain read and left
    unacknowledged for at least claim_idle_seconds (XAUTOCLAIM), then new ones (XREADGROUP)."""
    try:
        return _read(shard=shard, consumer=consumer, count=count, claim_idle_seconds=claim_idle_seconds)
    except ResponseError as error:
        if "NOGROUP" not in str(error):
            raise
    ensure_group(shard)  # first drain of this stream (or the stream was deleted)
    return _read(shard=shard, consumer=consumer, count=count, claim_idle_seconds=claim_idle_seconds)


def _read(*, shard: int, consumer: str, count: int, claim_idle_seconds: float) -> list[Entry]:
    client, stream = connection(), stream_key(shard)
    entries: list[Entry] = []
    cursor = "0-0"
    idle_ms = int(claim_idle_seconds * 1000)
    while len(entries) < count:
        chunk = min(CHUNK, count - len(entries))
        cursor, claimed, *_ = client.xautoclaim(stream, GROUP, consumer, idle_ms, start_id=cursor, count=chunk)
        entries += _payloads(claimed)
        if _id_text(cursor) == "0-0":
            break
    while len(entries) < count:
        reply = client.xreadgroup(GROUP, consumer, {stream: ">"}, count=min(CHUNK, count - len(entries)))
        fresh = _payloads(reply[0][1]) if reply else []
        if not fresh:
            break
        entries += fresh
    return entries


def _payloads(messages: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
    # A pending entry deleted meanwhile comes back without fields: nothing to store.
    return [(message_id, fields[FIELD]) for message_id, fields in messages if fields and FIELD in fields]


def _id_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def settle(*, shard: int, ids: Iterable[bytes], parked: Iterable[Entry] = ()) -> int:
    """Acknowledge and delete stored entries, and move unreadable ones to the dead letters.

    Call only after the stored entries are committed to the database. Each chunk is one MULTI/EXEC
    (the keys share a hash tag: one slot on a cluster), so an entry is never acknowledged without being
    deleted, nor parked without being acknowledged. Returns how many were still pending (0 for entries
    a drain that took over has acknowledged already).
    """
    client, stream, dead = connection(), stream_key(shard), dead_letter_key(shard)
    acked = 0
    work = [(entry_id, None) for entry_id in ids] + list(parked)
    for start in range(0, len(work), CHUNK):
        chunk = work[start : start + CHUNK]
        pipe = client.pipeline(transaction=True)
        for entry_id, payload in chunk:
            if payload is not None:
                pipe.xadd(dead, {FIELD: payload, b"source": entry_id})
        chunk_ids = [entry_id for entry_id, _ in chunk]
        pipe.xack(stream, GROUP, *chunk_ids)
        pipe.xdel(stream, *chunk_ids)
        acked += pipe.execute()[-2]
    return acked


def forget_idle_consumers(*, shard: int, idle_seconds: float) -> int:
    """Remove consumers of dead drains: nothing pending and idle for at least idle_seconds."""
    client, stream = connection(), stream_key(shard)
    removed = 0
    for info in client.xinfo_consumers(stream, GROUP):
        if info["pending"] == 0 and info["idle"] >= idle_seconds * 1000:
            client.xgroup_delconsumer(stream, GROUP, _id_text(info["name"]))
            removed += 1
    return removed


def drain_lock(*, shard: int, timeout: float) -> Lock:
    """A per-shard Redis lock: at most one drain per shard at a time."""
    return connection().lock(_key(shard, "drain-lock"), timeout=timeout, blocking=False)


def shard_depths(*, now: float | None = None) -> list[ShardDepth]:
    """Per shard: entries queued, pending, parked and the age of the oldest unacknowledged one.

    One pipelined round trip (one per node on Redis Cluster).
    """
    client = connection()
    pipe = client.pipeline(transaction=False)
    shards = range(shard_count())
    for shard in shards:
        pipe.xlen(stream_key(shard))
        pipe.xpending(stream_key(shard), GROUP)
        pipe.xlen(dead_letter_key(shard))
        pipe.xrange(stream_key(shard), count=1)
    replies = pipe.execute(raise_on_error=False)
    now = time.time() if now is None else now
    result = []
    for shard in shards:
        length, pending, dead, first = replies[4 * shard : 4 * shard + 4]
        for reply in (length, dead, first):
            if isinstance(reply, Exception):
                raise reply
        # No group yet (nothing ever drained): everything is queued.
        pending_count = 0 if isinstance(pending, ResponseError) else pending["pending"]
        if isinstance(pending, Exception) and not isinstance(pending, ResponseError):
            raise pending
        oldest = None
        if first:
            oldest = max(0.0, now - int(_id_text(first[0][0]).split("-")[0]) / 1000)
        result.append(
            ShardDepth(
                shard=shard, queued=length - pending_count, pending=pending_count, dead=dead, oldest_age_seconds=oldest
            )
        )
    return result


def depth() -> dict[str, int]:
    """Events waiting (queued), read but not acknowledged (pending) and parked (dead), summed over shards."""
    shards = shard_depths()
    return {
        "queued": sum(s.queued for s in shards),
        "pending": sum(s.pending for s in shards),
        "dead": sum(s.dead for s in shards),
    }


def drain_lag_seconds(*, now: float | None = None) -> float:
    """Drain lag: how long the oldest event not yet acknowledged, in any shard, has been buffered
    (from its stream id, the time Redis took it); 0 when everything is drained."""
    ages = [s.oldest_age_seconds for s in shard_depths(now=now) if s.oldest_age_seconds is not None]
    return max(ages, default=0.0)


def peek(limit_per_shard: int = 100) -> list[bytes]:
    """Payloads of the oldest unacknowledged events of every shard (to inspect; changes nothing)."""
    client = connection()
    return [
        fields[FIELD]
        for shard in range(shard_count())
        for _, fields in client.xrange(stream_key(shard), count=limit_per_shard)
        if FIELD in fields
    ]


def dead_letters(limit: int = 100) -> list[bytes]:
    """The oldest `limit` parked payloads over all shards, as stored (they may be unreadable: that is
    why they are here). parked_events() gives their shard, id and time too."""
    return [letter.payload for letter in parked_events(limit)]


def parked_events(limit: int = 100) -> list[DeadLetter]:
    """The oldest `limit` parked events over all shards, oldest first, with where and when they were parked."""
    client = connection()
    letters = []
    for shard in range(shard_count()):
        for letter_id, fields in client.xrange(dead_letter_key(shard), count=max(limit, 1)):
            text = _id_text(letter_id)
            letters.append(
                DeadLetter(shard=shard, id=text, parked_at=int(text.split("-")[0]) / 1000, payload=fields[FIELD])
            )
    letters.sort(key=lambda letter: (letter.parked_at, letter.shard, letter.id))
    return letters[: max(limit, 1)]


# Move up to ARGV[1] dead letters back into the shard's stream, atomically. KEYS: stream, dead letters.
_REPLAY_SCRIPT = """
local letters = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', tonumber(ARGV[1]))
for _, letter in ipairs(letters) do
  local fields = letter[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then redis.call('XADD', KEYS[1], '*', 'e', fields[i + 1]) end
  end
  redis.call('XDEL', KEYS[2], letter[1])
end
return #letters
"""


def replay_dead_letters(*, limit: int = 10_000) -> int:
    """Put up to `limit` parked events back into their shard's stream for the next drain; returns how many.

    Atomic per chunk (none lost or doubled). Storing is idempotent (event ids), so a replayed event
    already stored is not counted twice; one that is still unreadable is parked again by the drain.
    """
    client = connection()
    script = client.register_script(_REPLAY_SCRIPT)
    replayed = 0
    for shard in range(shard_count()):
        keys = [stream_key(shard), dead_letter_key(shard)]
        while replayed < limit:
            count = min(CHUNK, limit - replayed)
            moved = int(script(keys=keys, args=[count]))
            replayed += moved
            if moved < count:
                break
    return replayed
