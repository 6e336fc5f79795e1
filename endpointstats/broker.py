"""kombu's Redis transport with one fix: a worker survives Redis dying while a task runs.

With celery 5.7.0 / kombu 5.7.0 / redis-py 8.1.0, when Redis goes away while an acks_late task
(the drain) is running, the consumer tears its connection down twice: the first pass detaches
the transport from its kombu Connection (`transport.client = None`) but leaves the channel
open; the second pass closes the channel, which tries to hand the running task's message back
(`QoS.restore_unacked`), which builds a new connection pool from `self.connection.client` ->
AttributeError("'NoneType' object has no attribute 'hostname'"). That is not a connection error,
so the worker stops with "Unrecoverable error" instead of reconnecting.

Here a channel whose transport is already detached raises redis' ConnectionError instead, which
every caller (channel close, message ack) already treats as "the broker is gone". Nothing is lost:
the message stays in Redis' unacked hash and kombu redelivers it after the visibility timeout (the
periodic tasks have shorter expiries, so a stale one is simply discarded and the next beat tick
runs). Settings select it with CELERY_BROKER_TRANSPORT when the broker is Redis; remove it once
kombu handles the detached channel itself (system/tests/test_worker_survives_redis.py
reproduces the failure with the stock transport).
"""

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:

        if self.connection.client is None:  # the transport was detached by an earlier teardown
            raise RedisConnectionError("The broker connection is already closed.")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]  # private: not in celery-types


class Transport(kombu_redis.Transport):
    Channel = Channel
