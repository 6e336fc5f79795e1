"""The cache on a real Redis Cluster (REDIS_CLUSTER=true): django-redis through ClusterConnectionFactory."""

from django.core.cache import cache
from django_redis import get_redis_connection
from redis.cluster import RedisCluster


def test_cache_calls_whose_keys_live_on_several_nodes_work(on_redis_cluster):
    keys = [f"k{i}" for i in range(30)]
    client = get_redis_connection("default")
    assert isinstance(client, RedisCluster)
    nodes = {client.get_node_from_key(cache.make_key(key)).name for key in keys}
    assert len(nodes) == 3  # the keys of one call live on all three nodes

    cache.set_many({key: {"n": i} for i, key in enumerate(keys)}, timeout=60)
    assert cache.get_many(keys) == {key: {"n": i} for i, key in enumerate(keys)}
    cache.delete_many(keys[:10])
    assert sorted(cache.get_many(keys)) == sorted(keys[10:])
    assert cache.add("counter", 0) is True
    assert (cache.incr("counter"), cache.incr("counter")) == (1, 2)
    assert cache.get("k12") == {"n": 12}
