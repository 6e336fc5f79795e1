"""The Redis event buffer between the web role and PostgreSQL.

A reliable queue: the web role appends with one RPUSH; the drain atomically moves a
batch to a processing list, stores it, then deletes that list (the acknowledgement).
A drain that dies before acknowledging leaves its batch in the processing list, and
the next drain takes that batch again first: at-least-once delivery, made exact by
the idempotent insert keyed by event id. The acknowledgement deletes only the batch its
drain claimed, so a drain that stalled past its lock cannot delete the next one.
"""

from django.core.cache import cache
from django_redis import get_redis_connection

# Atomically: hand back an unacknowledged batch if there is one, else move up to
# ARGV[1] events from the queue to the processing list and return them.
_CLAIM_SCRIPT = """
local pending = redis.call('LRANGE', KEYS[2], 0, -1)
if #pending > 0 then return pending end
local batch = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #batch == 0 then return batch end
redis.call('LTRIM', KEYS[1], #batch, -1)
for i = 1, #batch, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(batch, i, math.min(i + 999, #batch)))
end
return batch
"""


def _key(name: str) -> str:
    # The cache's key prefix keeps tests (and co-tenant deployments) apart.
    return cache.make_key(f"tracker:{name}")


def queue_key() -> str:
    return _key("events")


def processing_key() -> str:
    return _key("events:processing")


def dead_letter_key() -> str:
    return _key("events:dead")


def connection():
    return get_redis_connection("default")


def push(payloads: list[str]) -> None:
    """Append encoded events in one round trip; raises redis.RedisError if Redis is unreachable."""
    connection().rpush(queue_key(), *payloads)


def claim(*, batch_size: int) -> list[bytes]:
    """Take the unacknowledged batch if one is left over, else the next batch_size events."""
    client = connection()
    script = client.register_script(_CLAIM_SCRIPT)
    return script(keys=[queue_key(), processing_key()], args=[batch_size])


# Delete the processing list only if it still holds the batch this drain claimed (same first
# payload: every payload carries a unique event id). A drain that stalled past its lock must
# not delete the next batch, which another drain may be storing right now.
_ACKNOWLEDGE_SCRIPT = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def acknowledge(batch: list[bytes]) -> bool:
    """Forget the claimed batch: call only after it is committed to the database.

    Returns False if the batch was already acknowledged (by a drain that took over).
    """
    if not batch:
        return False
    script = connection().register_script(_ACKNOWLEDGE_SCRIPT)
    return bool(script(keys=[processing_key()], args=[batch[0]]))


def park(payloads: list[bytes]) -> None:
    """Keep undecodable events aside for an operator instead of dropping them."""
    if payloads:
        connection().rpush(dead_letter_key(), *payloads)


def depth() -> dict[str, int]:
    """How many events wait in the queue, in an unacknowledged batch, and parked."""
    client = connection()
    pipe = client.pipeline(transaction=False)
    for key in (queue_key(), processing_key(), dead_letter_key()):
        pipe.llen(key)
    queued, processing, dead = pipe.execute()
    return {"queued": queued, "processing": processing, "dead": dead}


def drain_lock(*, timeout: float):
    """A Redis lock so one drain runs at a time (a second one would find nothing to claim)."""
    return connection().lock(_key("drain-lock"), timeout=timeout, blocking=False)
