import time
import uuid

import orjson
import pytest

from tracker import buffer, services
from tracker.events import Event, uuid7_hex
from tracker.models import AccessEvent

pytestmark = pytest.mark.django_db


def test_an_event_survives_the_buffer_encoding_unchanged(make_event):
    event = make_event(user_agent='quote " backslash \\ tab \t non-ascii é', duration_ms=None, status_code=None)

    assert Event.from_json(event.to_json()) == event
    assert Event.from_json(event.to_json().encode()) == event


def test_other_spellings_of_an_event_id_are_normalised(make_event):
    event_id = uuid.uuid4()
    data = orjson.loads(make_event().to_json())
    data["event_id"] = str(event_id).upper()

    assert Event.from_json(orjson.dumps(data)).event_id == event_id.hex


def test_a_buffered_event_whose_id_is_not_a_string_is_parked_and_the_rest_stored(make_event):
    data = orjson.loads(make_event().to_json())
    data["event_id"] = 12345
    services.record_events([make_event(), make_event()])
    buffer.push([orjson.dumps(data)])

    result = services.drain_buffer()

    assert (result.stored, result.parked) == (2, 1)
    assert AccessEvent.objects.count() == 2
    assert buffer.depth() == {"queued": 0, "pending": 0, "dead": 1}


def test_event_ids_are_uuid7_and_sort_by_creation_time():
    earlier = [uuid7_hex(unix_ms=1_764_000_000_000) for _ in range(1000)]
    later = uuid7_hex(unix_ms=1_764_000_000_001)

    assert len(set(earlier)) == 1000
    assert max(earlier) < later
    parsed = uuid.UUID(later)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert int(later[:12], 16) == 1_764_000_000_001  # the first 48 bits are the Unix milliseconds


def test_a_new_event_gets_a_time_ordered_id(make_event):
    first = make_event()
    time.sleep(0.002)
    second = make_event()

    assert uuid.UUID(first.event_id).version == 7
    assert first.event_id < second.event_id
    assert abs(int(first.event_id[:12], 16) - time.time() * 1000) < 60_000
