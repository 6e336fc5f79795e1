"""One Redis command on the request path for the least CPU: a connection each thread keeps.

redis-py's per-command path (pool checkout and release, retries, observability hooks) costs more
CPU than the round trip itself on the hot path (docs/PERFORMANCE.md), so the request path's two
commands (the rate-limit script and the tracking XADD) go through a connection the thread keeps,
made with the pool's own settings (address, db, password, timeouts). A stale socket is replaced
before sending; any error drops the connection and is raised (the caller falls back), so a
command is never sent twice. Clients without a plain connection pool (Redis Cluster) are not
served here: callers use redis-py's own commands for them.
"""

import os
import threading
from typing import Any

from redis import Redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_held = threading.local()


def supports(client: Any) -> bool:
    """True for a standalone client whose pool can lend connection settings (not a cluster or a pipeline)."""
    return isinstance(client, Redis) and getattr(client, "connection", None) is None


def held_connection(client: Redis) -> AbstractConnection:
    """This thread's own connection to the client's server (a new one after a fork or a new pool)."""
    pool = client.connection_pool
    connection = getattr(_held, "connection", None)
    if connection is None or _held.pool is not pool or _held.pid != os.getpid():
        connection = pool.connection_class(**pool.connection_kwargs)
        _held.connection, _held.pool, _held.pid = connection, pool, os.getpid()
    _drop_if_stale(connection)
    return connection


def command(client: Redis, *args: Any) -> Any:
    """Send one command on this thread's connection and return its reply (errors raised as redis-py's)."""
    connection = held_connection(client)
    try:
        connection.send_command(*args)
        return connection.read_response()
    except BaseException:
        forget(connection)
        raise


def forget(connection: AbstractConnection) -> None:
    """Close a connection after an error, so the next command starts on a fresh one."""
    connection.disconnect()
    if getattr(_held, "connection", None) is connection:
        _held.connection = None


def _drop_if_stale(connection: AbstractConnection) -> None:
    """Disconnect a socket the server closed (a restart, an idle timeout) or that holds unread
    data, so the next send reconnects; as redis-py's pool checks a connection before lending it."""
    if connection._sock is None:  # redis-py keeps the socket private
        return
    try:
        stale = connection.can_read()
    except (RedisConnectionError, RedisTimeoutError, OSError):
        stale = True
    if stale:
        connection.disconnect()
