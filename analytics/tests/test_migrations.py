"""Migrations 0004 and 0005 on tables that hold data: old sketches converted, runs of rollups built."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from analytics import rollup_ranges, sketches

pytestmark = pytest.mark.django_db
BEFORE = ("analytics", "0003_hourlystat_console_columns")
AFTER = ("analytics", "0004_range_stats_hll4096")


def _migrate(target: tuple[str, str]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def test_0004_converts_the_old_sketches_and_builds_the_runs_of_the_recent_days():
    apps = _migrate(BEFORE)
    hourly = apps.get_model("analytics", "HourlyStat")
    daily = apps.get_model("analytics", "DailyStat")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    rng = np.random.default_rng(1)
    legacy = {}
    for h in range(4):
        registers = np.zeros(1024, dtype=np.uint8)
        registers[rng.integers(0, 1024, size=50)] = rng.integers(1, 6, size=50)
        legacy[h] = registers
        hourly.objects.create(
            endpoint="/a",
            hour=day + timedelta(hours=h),
            covered_until=day + timedelta(hours=h + 1),
            access_count=10,
            latency_histogram=sketches.encode_histogram({100: 10}),
            client_sketch=registers.tobytes(),
        )
    union = np.maximum.reduce(list(legacy.values()))
    daily.objects.create(endpoint="/a", day=day.date(), access_count=40, client_sketch=union.tobytes())

    apps = _migrate(AFTER)

    hourly = apps.get_model("analytics", "HourlyStat")
    for row in hourly.objects.all():
        h = int((row.hour - day) / timedelta(hours=1))
        assert sketches.decode_sketch(row.client_sketch).tolist() == legacy[h].tolist()
    ranges = apps.get_model("analytics", "RangeStat")
    run = ranges.objects.get(endpoint="/a", start=day, end=day + timedelta(hours=3))
    assert run.access_count == 30
    assert (
        sketches.decode_sketch(run.client_sketch).tolist()
        == np.maximum.reduce([legacy[0], legacy[1], legacy[2]]).tolist()
    )
    assert sketches.merge_histograms([run.latency_histogram])[100] == 30
    assert ranges.objects.filter(start=day + timedelta(hours=1), end=day + timedelta(days=1)).get().access_count == 30

    apps = _migrate(BEFORE)  # and back: 1024 raw registers again
    hourly = apps.get_model("analytics", "HourlyStat")
    assert sorted(bytes(row.client_sketch) for row in hourly.objects.all()) == sorted(
        r.tobytes() for r in legacy.values()
    )
    _migrate(AFTER)


def test_0005_builds_the_runs_of_days_within_sub_blocks_from_the_daily_rows():
    apps = _migrate(AFTER)
    daily = apps.get_model("analytics", "DailyStat")
    ranges = apps.get_model("analytics", "RangeStat")
    block = rollup_ranges.block_of(datetime.now(UTC).date() - timedelta(days=20))
    clients = {}
    for index in range(rollup_ranges.BLOCK_DAYS):
        clients[index] = sketches.sketch_clients(f"10.0.{index}.{i}" for i in range(3 * index + 1))
        daily.objects.create(
            endpoint="/a",
            day=block + timedelta(days=index),
            access_count=index,
            latency_histogram=sketches.encode_histogram({5: index + 1}),
            client_sketch=clients[index],
        )

    apps = _migrate(("analytics", "0005_day_runs_of_sub_blocks"))

    ranges = apps.get_model("analytics", "RangeStat")
    origin = rollup_ranges.day_start(block)
    for lo, hi in [(9, 12), (8, 10), (4, 8), (12, 15), (0, 5)]:  # inside halves, quarters, eighths; the block's
        run = ranges.objects.get(endpoint="/a", start=origin + timedelta(days=lo), end=origin + timedelta(days=hi))
        assert run.access_count == sum(range(lo, hi))
        assert sketches.merge_histograms([run.latency_histogram])[5] == sum(range(lo + 1, hi + 1))
        assert bytes(run.client_sketch) == sketches.encode_sketch(
            sketches.merge_sketches(clients[i] for i in range(lo, hi))
        )
    assert ranges.objects.filter(endpoint="/a").count() == len(rollup_ranges.kept_day_runs())
