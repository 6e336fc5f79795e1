"""The roles as separate processes on private data stores: outages of PostgreSQL and Redis, start-up."""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from system.client import post_collect, request, stored_user_agents, wait_for
from system.stack import Role


def test_a_worker_survives_redis_dying_mid_drain_and_drains_again(stack, token):
    """kombu 5.7.0 made the worker exit here ("Unrecoverable error: AttributeError(... 'hostname')");
    endpointstats/broker.py turns that into a connection error the worker recovers from."""
    tag = f"redis-crash-{uuid.uuid4().hex[:8]}"
    stack.roles["worker"].stop()
    # Three drain batches (20000 each): killed while the second is being stored, the drain task is busy
    # in PostgreSQL, unacknowledged, when the consumer sees Redis go: the case kombu 5.7.0 crashed on.
    batches, per_batch = 50, 1000
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = pool.map(lambda b: post_collect(stack.web_port, token, per_batch, tag=f"{tag}-{b}"), range(batches))
        statuses = [reply.status for reply in replies]
    assert statuses == [201] * batches
    time.sleep(1.5)  # older than appendfsync's one second: the buffered events are on disk
    expected = batches * per_batch + batches  # the events, plus the /collect requests themselves (tracked)

    stack.start("worker")
    worker = stack.roles["worker"]
    pid = worker.pid
    first_batch = wait_for(lambda: sum(stored_user_agents(stack, prefix=tag).values()), timeout=60, interval=0.05)
    assert 0 < first_batch < expected  # the drain has committed a batch and has more to go

    stack.redis.kill()
    stack.redis.start()

    wait_for(lambda: not worker.alive() or sum(stored_user_agents(stack, prefix=tag).values()) >= expected, timeout=120)
    assert worker.alive() and worker.pid == pid, worker.log_tail()
    stored = stored_user_agents(stack, prefix=tag)
    assert sum(stored.values()) == expected and set(stored.values()) == {1}  # all of them, each once
    assert "Unrecoverable error" not in worker.log_since_start()


def test_a_database_outage_answers_json_503_with_retry_after_never_500(stack, token):
    assert request(stack.web_port, "GET", "/analytics/stats").status == 200
    stack.postgres.stop()
    try:
        replies = {
            path: request(stack.web_port, "GET", path)
            for path in ("/stats", "/analytics/stats", "/analytics/timeseries", "/analytics/geo", "/health/ready")
        }
        collect = post_collect(stack.web_port, token, 1, tag="pg-down")  # the token is looked up in the database
        welcome = request(stack.web_port, "GET", "/")
    finally:
        stack.postgres.start()

    assert welcome.status == 200  # served without the database
    for reply in [collect, *(replies[p] for p in ("/analytics/stats", "/analytics/timeseries", "/analytics/geo"))]:
        assert reply.status == 503
        assert reply.json() == {
            "error": "Service unavailable",
            "message": "The database is unavailable; retry in a few seconds.",
        }
        assert reply.headers["Retry-After"] == "5"
    stats = replies["/stats"]  # a warm cache may still answer (at most STATS_CACHE_SECONDS old)
    assert (stats.status == 200 and stats.json()["from_cache"]) or (
        stats.status == 503 and stats.headers["Retry-After"] == "5"
    )
    assert replies["/health/ready"].status == 503
    assert wait_for(lambda: request(stack.web_port, "GET", "/analytics/stats").status == 200, timeout=30)


def test_a_worker_creates_a_missing_prometheus_folder_instead_of_crashing(stack):
    workdir = stack.workdir / "missing-folder"
    workdir.mkdir()
    metrics_dir = workdir / "not" / "there" / "yet"
    env = stack.env_for("worker") | {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WORKER_METRICS_PORT": "",  # its start-up hook would otherwise create the folder first
        "CELERY_HEARTBEAT_FILE": str(workdir / "heartbeat"),
    }
    worker = Role("worker", workdir=workdir, env=env)
    worker.start()
    try:
        ready = wait_for(lambda: (workdir / "heartbeat").exists() or not worker.alive(), timeout=60, interval=0.2)
        assert ready and worker.alive(), worker.log_tail()
        assert metrics_dir.is_dir()
    finally:
        worker.stop()
