"""Pre-merged runs of rollups (RangeStat) and the client sketch: exact covers, exact merges, honest error."""

import random
import zlib
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from django.db import connection

from analytics import queries, rollup_ranges, sketches
from analytics.models import HourlyStat, RangeStat
from analytics.services import aggregation
from analytics.summaries import ROLLUP_MERGE_COLUMNS, Summary, merge_rollup_rows, pack_summaries, unpack_summaries

HOUR = timedelta(hours=1)
ORIGIN = datetime(2026, 3, 1, tzinfo=UTC)


def _hours_of(plan: rollup_ranges.Cover) -> list[datetime]:
    """Every hour the pieces of a cover hold, with repeats."""
    hours = list(plan.hours)
    for day in plan.days:
        start = rollup_ranges.day_start(day)
        hours += [start + i * HOUR for i in range(24)]
    for start, end in plan.ranges:
        hours += [start + i * HOUR for i in range(int((end - start) / HOUR))]
    return hours


def test_a_cover_holds_every_hour_of_the_period_once_and_long_periods_need_few_rows():
    rng = random.Random(3)
    cases = [(ORIGIN, ORIGIN + 30 * 24 * HOUR), (ORIGIN + 5 * HOUR, ORIGIN + 6 * HOUR), (ORIGIN, ORIGIN)]
    cases += [
        (start, start + rng.randrange(0, 31 * 24) * HOUR)
        for start in (ORIGIN + rng.randrange(0, 60 * 24) * HOUR for _ in range(3000))
    ]
    for start, end in cases:
        plan = rollup_ranges.cover(start=start, end=end)
        hours = _hours_of(plan)
        assert len(hours) == len(set(hours)), (start, end)
        assert set(hours) == {start + i * HOUR for i in range(int((end - start) / HOUR))}, (start, end)
        rows = len(plan.hours) + len(plan.days) + len(plan.ranges)
        if end - start >= timedelta(days=1):  # the periods that read rollups: five rows at most
            assert rows <= 5, (start, end, plan)
            if rollup_ranges.block_of((start + 23 * HOUR).date()) == rollup_ranges.block_of(end.date()):
                assert rows <= 4, (start, end, plan)  # whole days inside one block (7d): two rows at most
        for lo, hi in plan.ranges:  # only runs that are kept are asked for
            if hi - lo < timedelta(days=1):
                day = rollup_ranges.midnight(lo)
                assert (int((lo - day) / HOUR), int((hi - day) / HOUR) or 24) in rollup_ranges.hour_runs()
            else:
                block = rollup_ranges.block_of(lo.date())
                assert ((lo.date() - block).days, (hi.date() - block).days) in rollup_ranges.kept_day_runs()


def _sketch(rng: random.Random, clients: int) -> bytes:
    return sketches.sketch_clients(f"10.{rng.randrange(4)}.{rng.randrange(256)}.{i}" for i in range(clients))


@pytest.mark.django_db
def test_runs_merge_to_exactly_what_the_hourly_rows_merge_to_and_follow_a_rewritten_hour():
    rng = random.Random(5)
    days = 36  # crosses block boundaries (16-day blocks on date ordinals)
    rows = []
    for h in range(days * 24):
        for name in ("/a", "/b"):
            if name == "/b" and rng.random() < 0.5:  # an endpoint with gaps
                continue
            histogram = {rng.randrange(sketches.BUCKETS): rng.randrange(1, 50) for _ in range(5)}
            rows.append(
                HourlyStat(
                    endpoint=name,
                    hour=ORIGIN + h * HOUR,
                    covered_until=ORIGIN + (h + 1) * HOUR,
                    access_count=sum(histogram.values()) + 1,
                    error_count=rng.randrange(3),
                    total_response_time_ms=float(rng.randrange(1000)),
                    timed_count=sum(histogram.values()),
                    last_accessed_at=ORIGIN + h * HOUR + timedelta(minutes=rng.randrange(60)),
                    latency_histogram=sketches.encode_histogram(histogram),
                    client_sketch=_sketch(rng, rng.randrange(0, 300)),
                )
            )
    HourlyStat.objects.bulk_create(rows)
    for d in range(days):
        aggregation.rebuild_day(day=(ORIGIN + d * 24 * HOUR).date())

    def check(start: datetime, end: datetime) -> None:
        expected = merge_rollup_rows(
            HourlyStat.objects.filter(hour__gte=start, hour__lt=end).values_list(*ROLLUP_MERGE_COLUMNS)
        )
        got = queries.rollup_summaries(start=start, end=end, endpoint=None)
        assert sorted(got) == sorted(expected)
        for name, want in expected.items():
            have = got[name]
            assert (have.access_count, have.error_count, have.timed_count, have.last_accessed_at) == (
                want.access_count,
                want.error_count,
                want.timed_count,
                want.last_accessed_at,
            )
            assert have.total_response_time_ms == pytest.approx(want.total_response_time_ms)
            assert have.histogram.tolist() == want.histogram.tolist()
            assert have.sketch.tolist() == want.sketch.tolist()

    end_of_data = ORIGIN + days * 24 * HOUR
    periods = [
        (end_of_data - 30 * 24 * HOUR - 7 * HOUR, end_of_data - 7 * HOUR),
        (ORIGIN + 3 * HOUR, ORIGIN + 9 * HOUR),
    ]
    periods += [(ORIGIN + 20 * HOUR, ORIGIN + (20 + 7 * 24) * HOUR), (ORIGIN + 24 * HOUR, ORIGIN + 72 * HOUR)]
    for start, end in periods:
        check(start, end)

    # An hour in the middle is rewritten (late events): every run that holds it follows.
    changed = ORIGIN + (20 * 24 + 5) * HOUR
    HourlyStat.objects.filter(hour=changed, endpoint="/a").update(
        access_count=10_000, latency_histogram=sketches.encode_histogram({7: 9_999}), client_sketch=_sketch(rng, 5000)
    )
    aggregation._rebuild_day(day=changed.date())
    aggregation._rebuild_runs(day=changed.date(), hour=changed)
    for start, end in periods:
        check(start, end)


@pytest.mark.django_db
def test_aggregating_an_hour_rebuilds_the_runs_that_hold_it(store, event):
    now = datetime(2026, 3, 20, 12, 30, tzinfo=UTC)
    hour = datetime(2026, 3, 18, 5, tzinfo=UTC)
    store(event(endpoint="/a", occurred_at=hour + timedelta(minutes=1), client_ip="81.2.69.1"))
    aggregation.aggregate_hour(hour=hour, now=now)
    assert RangeStat.objects.filter(endpoint="/a", start=hour - 5 * HOUR, end=hour + HOUR).get().access_count == 1
    store(event(endpoint="/a", occurred_at=hour + timedelta(minutes=2), client_ip="81.2.69.2"))
    aggregation.aggregate_hour(hour=hour, now=now)  # late events: the hour and its runs again
    run = RangeStat.objects.get(endpoint="/a", start=hour, end=hour + 19 * HOUR)
    assert run.access_count == 2
    assert sketches.estimate_clients(sketches.merge_sketches([run.client_sketch])) == 2
    stats = queries.endpoint_stats(period="7d", now=now)
    assert [(row.endpoint, row.access_count, row.unique_clients) for row in stats] == [("/a", 2, 2)]


def test_a_sketch_folded_to_fewer_registers_is_the_sketch_hashed_into_them():
    addresses = [f"192.0.2.{i % 250}:{i}" for i in range(20_000)]
    fine = sketches.decode_sketch(sketches.sketch_clients(addresses))
    coarse = np.zeros(1 << 10, dtype=np.uint8)
    for address in addresses:
        index, rank = sketches.register_and_rank(sketches.client_hash(address), bits=10)
        coarse[index] = max(coarse[index], rank)
    assert sketches.fold(fine, 10).tolist() == coarse.tolist()
    assert sketches.union(fine, coarse).tolist() == coarse.tolist()


@pytest.mark.parametrize("clients", [1, 7, 100, 1_000, 5_000, 30_000, 200_000])
def test_the_client_estimate_is_within_3_percent(clients):
    registers = sketches.decode_sketch(sketches.sketch_clients(f"client-{clients}-{i}" for i in range(clients)))
    estimate = sketches.estimate_clients(registers)
    assert abs(estimate - clients) / clients <= 0.03, estimate
    assert sketches.estimate_clients(sketches.empty_sketch()) == 0
    assert sketches.decode_sketch(sketches.encode_sketch(registers)).tolist() == registers.tolist()


@pytest.mark.django_db
def test_registers_computed_in_sql_match_the_python_ones():
    rng = random.Random(11)
    hashes = [rng.getrandbits(64) for _ in range(500)] + [0, 1, (1 << 64) - 1, 1 << 52, 7 << 52]
    hashes += [(5 << 52) + (1 << k) + d for k in range(52) for d in (-1, 0) if (1 << k) + d > 0]
    signed = [h - (1 << 64) if h >= 1 << 63 else h for h in hashes]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {sketches.HLL_REGISTER_SQL}, {sketches.HLL_RANK_SQL} FROM unnest(%s::bigint[]) WITH ORDINALITY"
            " AS t(h, n) ORDER BY n",
            [signed],
        )
        in_sql = cursor.fetchall()
    assert in_sql == [sketches.register_and_rank(h) for h in hashes]


def test_a_run_is_never_asked_for_a_single_hour_so_the_running_hour_comes_from_its_own_row():
    newest = datetime(2026, 3, 1, 0, tzinfo=UTC)
    assert rollup_ranges.cover(start=newest, end=newest + HOUR) == rollup_ranges.Cover(hours=[newest])
    assert rollup_ranges.cover(start=newest - HOUR, end=newest + HOUR).ranges == []
    assert rollup_ranges.block_of(date(2026, 3, 1)).toordinal() % rollup_ranges.BLOCK_DAYS == 0


def test_a_run_keeps_the_precision_of_its_own_rows_when_older_sketches_sit_next_to_it():
    old = np.zeros(1 << 10, dtype=np.uint8)
    old[5] = 3
    new = sketches.decode_sketch(sketches.sketch_clients(f"198.51.100.{i}" for i in range(200)))
    histogram = sketches.encode_histogram({1: 1})
    rows = [
        (0, "/a", 1, 0, 1.0, 1, None, histogram, bytes([10]) + zlib.compress(old.tobytes())),
        (1, "/a", 1, 0, 1.0, 1, None, histogram, sketches.encode_sketch(new)),
        (2, "/a", 1, 0, 1.0, 1, None, histogram, sketches.encode_sketch(new)),
    ]
    merged = rollup_ranges.merge_runs(rows=rows, units=3, runs=[(1, 3), (0, 3), (0, 2)])
    assert merged[(1, 3)]["/a"].sketch.tolist() == new.tolist()  # only new rows: full precision
    assert merged[(0, 3)]["/a"].sketch.tolist() == sketches.union(old, new).tolist()  # folded to 1024
    assert len(merged[(0, 2)]["/a"].sketch) == 1 << 10
    assert merged[(0, 3)]["/a"].access_count == 3


@pytest.mark.django_db
def test_a_running_hour_with_an_older_sketch_is_redone_at_full_precision(store, event, settings):
    settings.ANALYTICS_LIVE_LAG_SECONDS = 30
    hour = datetime(2026, 3, 3, 12, tzinfo=UTC)
    store(*[event(endpoint="/a", occurred_at=hour + timedelta(seconds=i), client_ip=f"81.2.69.{i}") for i in range(50)])
    aggregation.aggregate_live(now=hour + timedelta(minutes=5))
    row = HourlyStat.objects.get(endpoint="/a", hour=hour)
    legacy = sketches.fold(sketches.decode_sketch(row.client_sketch), 10)
    HourlyStat.objects.filter(pk=row.pk).update(client_sketch=bytes([10]) + zlib.compress(legacy.tobytes()))
    store(event(endpoint="/a", occurred_at=hour + timedelta(minutes=6), client_ip="81.2.69.200"))

    aggregation.aggregate_live(now=hour + timedelta(minutes=8))

    row = HourlyStat.objects.get(endpoint="/a", hour=hour)
    assert sketches.precision_of(row.client_sketch) == sketches.HLL_BITS
    assert row.access_count == 51


def _registers(rng: random.Random, clients: int, bits: int = sketches.HLL_BITS) -> np.ndarray:
    registers = np.zeros(1 << bits, dtype=np.uint8)
    for _ in range(clients):
        index, rank = sketches.register_and_rank(rng.getrandbits(64), bits=bits)
        registers[index] = max(registers[index], rank)
    return registers


def test_sketches_round_trip_sparse_when_small_packed_when_busy_and_old_zlib_ones_still_read():
    rng = random.Random(17)
    small, busy = _registers(rng, 300), _registers(rng, 100_000)
    busy[[3, 4]] = [busy.min() + 16, 50]  # more than 15 above the base: kept after the nibbles
    for registers, flag, most in ((small, sketches.SPARSE, 3 * 300), (busy, sketches.PACKED, 2 + 8192 + 3 * 8)):
        blob = sketches.encode_sketch(registers)
        assert blob[0] == flag | sketches.HLL_BITS and len(blob) <= 1 + most
        assert sketches.decode_sketch(blob).tolist() == registers.tolist()
        assert sketches.precision_of(blob) == sketches.HLL_BITS
    older = _registers(rng, 5000, bits=12)  # as written before 2**14: precision, then zlib
    blob = bytes([12]) + zlib.compress(older.tobytes())
    assert sketches.decode_sketch(blob).tolist() == older.tolist() and sketches.precision_of(blob) == 12
    assert sketches.encode_sketch(sketches.empty_sketch()) == b"" and sketches.decode_sketch(b"") is None


def test_sketches_of_many_endpoints_merged_in_one_pass_equal_merging_them_one_at_a_time():
    rng = random.Random(19)
    blobs = [sketches.encode_sketch(_registers(rng, n)) for n in (0, 1, 40, 2500, 3000, 30_000, 90_000)]
    older = bytes([12]) + zlib.compress(_registers(rng, 4000, bits=12).tobytes())
    groups = [blobs[:4], blobs[3:], [], [b"", None], [blobs[5], older, blobs[1]], [blobs[6]], blobs[::-1]]
    merged = sketches.merge_sketch_groups(groups)
    assert [m.tolist() for m in merged] == [sketches.merge_sketches(group).tolist() for group in groups]
    assert len(merged[4]) == 1 << 12  # folded to the older sketch's precision, as one at a time


@pytest.mark.django_db
def test_rollup_rows_fetched_in_binary_are_the_rows_the_orm_reads():
    HourlyStat.objects.create(endpoint="/ä", hour=ORIGIN, covered_until=ORIGIN + HOUR)  # empty blobs, no time
    HourlyStat.objects.create(
        endpoint="/b",
        hour=ORIGIN,
        covered_until=ORIGIN + HOUR,
        access_count=2**40,
        error_count=3,
        total_response_time_ms=12.25,
        timed_count=7,
        last_accessed_at=ORIGIN + timedelta(minutes=5, microseconds=17),
        latency_histogram=sketches.encode_histogram({3: 7}),
        client_sketch=sketches.sketch_clients(f"10.0.0.{i}" for i in range(200)),
    )
    rows = HourlyStat.objects.filter(hour=ORIGIN).order_by("endpoint").values_list(*ROLLUP_MERGE_COLUMNS)
    expected = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]
    assert queries._fetch_in_binary(rows) == expected


def test_summaries_packed_for_the_rollup_cache_unpack_to_the_same_summaries():
    rng = random.Random(23)
    summaries = {
        "/busy": Summary(access_count=9, last_accessed_at=ORIGIN, sketch=_registers(rng, 80_000)),
        "/quiet": Summary(unique_clients=3, countries={"SE": 2}, top_clients={"198.51.100.7": 2}),
        "/older": Summary(sketch=_registers(rng, 900, bits=12)),  # a merge folded to an older precision
    }
    summaries["/busy"].sketch[[1, 2]] = [summaries["/busy"].sketch.min() + 16, 50]
    summaries["/busy"].histogram[42] = 7

    unpacked = unpack_summaries(pack_summaries(summaries))

    assert list(unpacked) == list(summaries)
    for name, summary in summaries.items():
        got = unpacked[name]
        assert got.sketch.tolist() == summary.sketch.tolist() and got.histogram.tolist() == summary.histogram.tolist()
        got.sketch, got.histogram = summary.sketch, summary.histogram
        assert got == summary
