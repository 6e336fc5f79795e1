"""Redis Cluster behind django-redis (REDIS_CLUSTER=true), which has no cluster support of its own.

django-redis lets settings name the factory that builds its Redis client (CONNECTION_FACTORY) and
the client class wrapping it (CLIENT_CLASS). The factory here returns redis-py's own cluster client,
`redis.cluster.RedisCluster` (maintained with redis-py, which the project already pins), so
`django.core.cache.cache` and `django_redis.get_redis_connection("default")` keep working for every
call site: single-key commands, Lua scripts and pipelines whose keys share a hash tag are routed to
the node owning the slot. The client class only replaces the cache operations that take several
keys in one command (MGET) by redis-py's slot-splitting versions.
"""

from collections.abc import Iterable
from typing import Any

from django_redis.client import DefaultClient
from django_redis.pool import ConnectionFactory
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException

# Connection parameters django-redis builds that RedisCluster takes as they are.
_PASSED_ON = ("username", "password", "socket_timeout", "socket_connect_timeout")


class ClusterConnectionFactory(ConnectionFactory):
    """Builds one RedisCluster per URL and process (it holds a connection pool per node)."""

    _clusters: dict[str, RedisCluster] = {}

    def connect(self, url: str) -> RedisCluster:
        params = self.make_connection_params(url)
        client = self._clusters.get(url)
        if client is None:
            try:
                client = RedisCluster.from_url(url, **{k: v for k, v in params.items() if k in _PASSED_ON})
            except RedisClusterException as error:
                # Raised when no node answers: callers (the buffer's fallback, health checks, the
                # rate limiter's failure policy) handle redis-py's ConnectionError.
                raise ConnectionError(str(error)) from error
            self._clusters[url] = client
        return client

    def disconnect(self, connection: Any) -> None:
        connection.disconnect_connection_pools()


class ClusterClient(DefaultClient):
    """django-redis's client on a cluster: MGET split by slot (keys of one call may live on several nodes)."""

    def get_many(self, keys: Iterable[Any], version: int | None = None, client: Any = None) -> dict[Any, Any]:
        if not keys:
            return {}
        if client is None:
            client = self.get_client(write=False)
        made = {self.make_key(key, version=version): key for key in keys}
        values = client.mget_nonatomic(list(made))
        return {made[key]: self.decode(value) for key, value in zip(made, values, strict=True) if value is not None}
