from datetime import UTC, datetime, timedelta

from django.db import migrations
from django.db.models import Q

RUNS_KEPT_DAYS = 32  # analytics.rollup_ranges.KEEP
COLUMNS = (
    "endpoint", "access_count", "error_count", "total_response_time_ms", "timed_count", "last_accessed_at",
    "latency_histogram", "client_sketch",
)


def build_sub_block_runs(apps, schema_editor):
    """The runs of days within the halves, quarters and eighths of each 16-day block (reads of days
    inside one block ask for them) for the blocks periods can still reach, from the DailyStat rows.
    The block's own runs are written again, unchanged."""
    from analytics import rollup_ranges, sketches

    daily = apps.get_model("analytics", "DailyStat")
    ranges = apps.get_model("analytics", "RangeStat")
    since = rollup_ranges.midnight(datetime.now(UTC)) - timedelta(days=RUNS_KEPT_DAYS)
    days = daily.objects.filter(day__gte=since.date()).values_list("day", flat=True).distinct()
    for block in sorted({rollup_ranges.block_of(day) for day in days}):
        rows = (
            ((moment - block).days, *rest)
            for moment, *rest in daily.objects.filter(
                day__gte=block, day__lt=block + timedelta(days=rollup_ranges.BLOCK_DAYS)
            ).values_list("day", *COLUMNS)
        )
        merged = rollup_ranges.merge_day_runs(rows=rows, changed=None)
        origin = rollup_ranges.day_start(block)
        spans = [(origin + timedelta(days=lo), origin + timedelta(days=hi)) for lo, hi in merged]
        which = Q()
        for start, end in spans:
            which |= Q(start=start, end=end)
        ranges.objects.filter(which).delete()
        ranges.objects.bulk_create(
            [
                ranges(
                    endpoint=name, start=start, end=end, access_count=m.access_count, error_count=m.error_count,
                    total_response_time_ms=m.total_response_time_ms, timed_count=m.timed_count,
                    last_accessed_at=m.last_accessed_at, latency_histogram=sketches.dense_to_blob(m.histogram),
                    client_sketch=sketches.encode_sketch(m.sketch),
                )
                for (start, end), per_endpoint in zip(spans, merged.values(), strict=True)
                for name, m in sorted(per_endpoint.items())
            ],
            batch_size=1000,
        )


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0004_range_stats_hll4096"),
    ]

    operations = [
        # Backwards: the extra runs are left in place (never read by the older code, pruned with age).
        migrations.RunPython(build_sub_block_runs, migrations.RunPython.noop),
    ]
