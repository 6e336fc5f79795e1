import time
from datetime import UTC, datetime, timedelta

import pytest

from endpointstats.celery import app as celery_app
from tracker import buffer, services, tasks
from tracker.events import Event
from tracker.models import AccessEvent, EndpointStat

# Every test runs on the standalone Redis and on a real Redis Cluster.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_backend")]
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def read(consumer: str, count: int, *, idle: float = 0.0) -> list[buffer.Entry]:
    """What a drain called `consumer` reads from this process's shard."""
    return buffer.read(shard=buffer.local_shard(), consumer=consumer, count=count, claim_idle_seconds=idle)


def dead_payloads() -> list[bytes]:
    letters = buffer.parked_events(limit=100)
    assert [letter.payload for letter in letters] == buffer.dead_letters(100)
    return [letter.payload for letter in letters]


def test_drain_stores_every_buffered_event_once_and_counts_it(make_event):
    events = [make_event(endpoint="/stats", status_code=200 if i % 4 else 503, is_error=i % 4 == 0) for i in range(40)]
    services.record_events(events)

    result = services.drain_buffer(batch_size=7)

    assert (result.stored, result.claimed, result.batches) == (40, 40, 6)
    assert AccessEvent.objects.count() == 40
    stat = EndpointStat.objects.get(endpoint="/stats")
    assert (stat.access_count, stat.success_count, stat.error_count) == (40, 30, 10)
    assert buffer.depth() == {"queued": 0, "pending": 0, "dead": 0}


@pytest.mark.contract
def test_storing_the_same_events_twice_counts_them_once(make_event):
    events = [make_event(endpoint="/a") for _ in range(5)]

    assert services.store_events(events) == 5
    assert services.store_events(events) == 0

    assert EndpointStat.objects.get(endpoint="/a").access_count == 5
    assert AccessEvent.objects.count() == 5


def test_a_drain_killed_after_storing_but_before_acknowledging_counts_nothing_twice(make_event, settings):
    settings.DRAIN_CLAIM_IDLE_SECONDS = 0
    services.record_events([make_event(endpoint="/k") for _ in range(30)])

    claimed = read("killed", 100)  # the worker reads its batch ...
    services.store_events([Event.from_json(payload) for _, payload in claimed])  # ... commits it ...
    # ... and is killed before buffer.settle(...). The next drain takes the batch over (XAUTOCLAIM).
    services.record_events([make_event(endpoint="/k") for _ in range(3)])
    result = services.drain_buffer()

    assert result.claimed == 33
    assert EndpointStat.objects.get(endpoint="/k").access_count == 33
    assert AccessEvent.objects.filter(endpoint="/k").count() == 33
    assert buffer.depth() == {"queued": 0, "pending": 0, "dead": 0}


def test_a_drain_killed_before_storing_loses_nothing(make_event, settings):
    settings.DRAIN_CLAIM_IDLE_SECONDS = 0
    services.record_events([make_event(endpoint="/k") for _ in range(12)])

    read("killed", 5)  # read, then killed: 5 events sit unacknowledged
    services.drain_buffer(batch_size=5)

    assert EndpointStat.objects.get(endpoint="/k").access_count == 12


def test_events_a_drain_holds_are_not_taken_over_before_the_idle_time(make_event, settings):
    settings.DRAIN_CLAIM_IDLE_SECONDS = 3600
    services.record_events([make_event(endpoint="/k") for _ in range(12)])
    read("busy", 5)  # another drain is storing these right now

    result = services.drain_buffer()

    assert result.claimed == 7
    assert buffer.depth() == {"queued": 0, "pending": 5, "dead": 0}
    settings.DRAIN_CLAIM_IDLE_SECONDS = 0  # that drain died: its events are taken over
    assert services.drain_buffer().claimed == 5
    assert EndpointStat.objects.get(endpoint="/k").access_count == 12


def test_every_shard_is_drained_whichever_process_wrote_to_it(make_event, settings):
    settings.BUFFER_SHARDS = 4
    for shard in range(4):
        buffer.push([make_event(endpoint=f"/s{shard}").to_json() for _ in range(shard + 1)], shard=shard)

    assert [depth.queued for depth in buffer.shard_depths()] == [1, 2, 3, 4]
    result = services.drain_buffer()

    assert (result.stored, result.claimed) == (10, 10)
    counts = dict(EndpointStat.objects.values_list("endpoint", "access_count"))
    assert counts == {"/s0": 1, "/s1": 2, "/s2": 3, "/s3": 4}
    assert buffer.depth() == {"queued": 0, "pending": 0, "dead": 0}


def test_a_shard_held_by_another_drain_is_left_to_it(make_event, settings):
    settings.BUFFER_SHARDS = 2
    buffer.push([make_event(endpoint="/a").to_json()], shard=0)
    buffer.push([make_event(endpoint="/b").to_json()], shard=1)
    lock = buffer.drain_lock(shard=0, timeout=60)
    assert lock.acquire()

    result = services.drain_buffer()
    lock.release()

    assert result.claimed == 1
    assert list(EndpointStat.objects.values_list("endpoint", flat=True)) == ["/b"]
    assert [depth.queued for depth in buffer.shard_depths()] == [1, 0]


def test_the_drain_lag_is_how_long_the_oldest_unacknowledged_event_has_been_buffered(make_event):
    assert buffer.drain_lag_seconds() == 0.0
    services.record_events([make_event()])
    buffered_at = buffer.shard_depths()[buffer.local_shard()]

    assert buffered_at.oldest_age_seconds is not None
    assert buffer.drain_lag_seconds(now=time.time() + 90) >= 90  # looked at 90 s later
    services.drain_buffer()
    assert buffer.shard_depths()[buffer.local_shard()].oldest_age_seconds is None
    assert buffer.drain_lag_seconds(now=time.time() + 90) == 0.0


@pytest.mark.contract
def test_counters_keep_the_latest_request_as_last(make_event):
    late = make_event(endpoint="/x", occurred_at=T0 + timedelta(minutes=5), duration_ms=9.0, client_ip="198.51.100.1")
    early = make_event(endpoint="/x", occurred_at=T0, duration_ms=1.0, client_ip="198.51.100.2")
    services.store_events([late])
    services.store_events([early])  # arrives later, happened earlier

    stat = EndpointStat.objects.get(endpoint="/x")
    assert (stat.last_accessed_at, stat.last_response_time_ms, stat.last_client_ip) == (
        late.occurred_at,
        9.0,
        "198.51.100.1",
    )
    assert stat.total_response_time_ms == 10.0


def test_endpoints_beyond_the_cap_are_counted_under_one_key(make_event, settings):
    settings.TRACKING_MAX_ENDPOINTS = 3
    # The endpoints seen first keep their own counters; later new ones share the overflow key.
    services.store_events([make_event(endpoint=f"/e{i}", occurred_at=T0 + timedelta(seconds=i)) for i in range(10)])
    services.store_events([make_event(endpoint="/e1"), make_event(endpoint="/late")])

    names = set(EndpointStat.objects.values_list("endpoint", flat=True))
    assert names == {"/e0", "/e1", "/e2", settings.TRACKING_OVERFLOW_ENDPOINT}
    assert EndpointStat.objects.get(endpoint=settings.TRACKING_OVERFLOW_ENDPOINT).access_count == 8
    assert EndpointStat.objects.get(endpoint="/e1").access_count == 2


def test_user_agents_with_tabs_and_newlines_survive_the_copy(make_event):
    odd = "evil\tagent\nwith \\ backslash"
    services.store_events([make_event(user_agent=odd, client_ip=None)])

    row = AccessEvent.objects.get()
    assert (row.user_agent, row.client_ip) == (odd, None)


def test_an_undecodable_buffered_event_is_parked_not_dropped(make_event):
    services.record_events([make_event()])
    buffer.push(["{not json"])

    result = services.drain_buffer()

    assert (result.stored, result.parked) == (1, 1)
    assert dead_payloads() == [b"{not json"]
    assert buffer.depth() == {"queued": 0, "pending": 0, "dead": 1}


def test_dead_letters_can_be_replayed_and_an_unreadable_one_is_parked_again(make_event):
    good = make_event(endpoint="/fixed").to_json()
    buffer.push(["{not json", good])
    services.drain_buffer()  # the first is parked, the second stored
    assert dead_payloads() == [b"{not json"]

    assert buffer.replay_dead_letters() == 1
    assert buffer.depth() == {"queued": 1, "pending": 0, "dead": 0}
    result = services.drain_buffer()

    assert (result.claimed, result.parked) == (1, 1)
    assert dead_payloads() == [b"{not json"]
    assert EndpointStat.objects.get(endpoint="/fixed").access_count == 1


def test_a_buffered_event_with_a_wrong_type_is_parked_and_the_rest_of_its_batch_stored(make_event):
    good = [make_event(endpoint="/ok") for _ in range(4)]
    services.record_events(good[:2])
    wrong = make_event(endpoint="/bad").to_json().replace('"status_code":200', '"status_code":"two hundred"')
    buffer.push([wrong])
    services.record_events(good[2:])

    result = services.drain_buffer()

    assert (result.stored, result.parked) == (4, 1)
    assert EndpointStat.objects.get(endpoint="/ok").access_count == 4
    assert not EndpointStat.objects.filter(endpoint="/bad").exists()
    assert dead_payloads() == [wrong.encode()]
    assert services.drain_buffer().claimed == 0  # the batch was acknowledged, not retried forever


def test_a_payload_spanning_two_lines_cannot_smuggle_a_second_event(make_event):
    first, second = make_event(endpoint="/one").to_json(), make_event(endpoint="/two").to_json()
    buffer.push([first + "\n" + second])

    result = services.drain_buffer()

    assert (result.stored, result.parked) == (0, 1)
    assert not EndpointStat.objects.exists()


def test_a_batch_mixing_stored_and_new_events_counts_only_the_new_ones(make_event):
    old = [make_event(endpoint="/m", occurred_at=T0 + timedelta(seconds=i)) for i in range(5)]
    new = [
        make_event(endpoint="/m", occurred_at=T0 + timedelta(minutes=1, seconds=i), duration_ms=7.0) for i in range(5)
    ]
    services.store_events(old)
    services.record_events(old + new)  # a re-delivered batch with fresh events behind it

    result = services.drain_buffer()

    assert (result.claimed, result.stored) == (10, 5)
    stat = EndpointStat.objects.get(endpoint="/m")
    assert (stat.access_count, stat.last_accessed_at, stat.last_response_time_ms) == (10, new[-1].occurred_at, 7.0)
    assert AccessEvent.objects.filter(endpoint="/m").count() == 10


def test_a_stalled_drain_cannot_acknowledge_the_batch_of_the_drain_that_took_over(make_event):
    services.record_events([make_event(endpoint="/one") for _ in range(3)])
    shard = buffer.local_shard()
    stalled = read("a", 3)  # drain A reads, then stalls past its lock and the idle time

    taken_over = read("b", 3)  # drain B takes the idle batch over
    assert taken_over == stalled
    assert buffer.settle(shard=shard, ids=[entry_id for entry_id, _ in taken_over]) == 3
    services.record_events([make_event(endpoint="/two") for _ in range(3)])
    next_batch = read("b", 3, idle=3600)  # B is storing its next batch ...

    # ... when A wakes up and acknowledges its old one: nothing of B's is touched.
    assert buffer.settle(shard=shard, ids=[entry_id for entry_id, _ in stalled]) == 0
    assert buffer.depth() == {"queued": 0, "pending": 3, "dead": 0}
    assert read("c", 3) == next_batch  # still there for B, or for whoever takes over


def test_a_shard_task_drains_its_shard_only(make_event, settings):
    settings.BUFFER_SHARDS = 4
    for shard in range(4):
        buffer.push([make_event(endpoint=f"/s{shard}").to_json()], shard=shard)

    assert tasks.drain_shard_task(2) == 1

    assert list(EndpointStat.objects.values_list("endpoint", flat=True)) == ["/s2"]
    assert [depth.queued for depth in buffer.shard_depths()] == [1, 1, 0, 1]


def test_the_beat_task_sends_one_drain_task_per_shard(make_event, settings):
    settings.BUFFER_SHARDS = 3
    for shard in range(3):
        buffer.push([make_event(endpoint=f"/s{shard}").to_json()], shard=shard)
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True  # the shard tasks run here instead of on a worker
    try:
        assert tasks.drain_events_task() == 3
    finally:
        celery_app.conf.task_always_eager = eager

    assert EndpointStat.objects.count() == 3
    assert buffer.depth() == {"queued": 0, "pending": 0, "dead": 0}


def test_consumers_of_drains_gone_for_good_are_forgotten_once_they_hold_nothing(make_event):
    services.record_events([make_event() for _ in range(2)])
    shard = buffer.local_shard()
    held = read("gone-with-events", 1)
    buffer.settle(shard=shard, ids=[entry_id for entry_id, _ in read("gone-empty", 1, idle=3600)])

    assert buffer.forget_idle_consumers(shard=shard, idle_seconds=0) == 1  # "gone-empty" only

    assert read("next", 5) == held  # still pending, taken over: nothing was lost with the consumer
