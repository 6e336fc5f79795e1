"""manage.py aggregate_hours [--hour H | --since DATE]: roll raw events into HourlyStat (idempotent)."""

from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from analytics.periods import floor_time
from analytics.services import aggregation


def _parse(value: str, *, what: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"{what} {value!r} is not a date or an ISO datetime (e.g. 2026-03-01T10:00Z).")
        moment = datetime(day.year, day.month, day.day)
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment


class Command(BaseCommand):
    help = (
        "Aggregate raw events into hourly rollups. Without options: the last complete hour. "
        "--hour aggregates one hour, --since every hour from a date up to the last complete hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--hour", help="Any time within the hour, e.g. 2026-03-01T10:00Z (UTC if no offset).")
        group.add_argument("--since", help="Date or datetime to backfill from.")

    def handle(self, *args: object, hour: str | None = None, since: str | None = None, **options: object) -> None:
        now = timezone.now()
        end = aggregation.last_complete_hour(now=now) + timedelta(hours=1)
        if hour:
            start = floor_time(_parse(hour, what="--hour"), timedelta(hours=1))
            end = start + timedelta(hours=1)
        elif since:
            start = _parse(since, what="--since")
        else:
            start = end - timedelta(hours=1)
        if start >= end:
            raise CommandError("Nothing to aggregate: the start is not before the last complete hour.")

        def progress(done: int, total: int, moment: datetime, rows: int) -> None:
            width = 30
            bar = "#" * int(width * done / total)
            self.stdout.write(
                f"\r[{bar:<{width}}] {done}/{total} hours, {moment:%Y-%m-%d %H:00} -> {rows} rows", ending=""
            )
            self.stdout.flush()

        result = aggregation.aggregate_hours(start=start, end=end, now=now, progress=progress)
        self.stdout.write("")
        message = f"Aggregated {result.hours} hour(s) into {result.rows} HourlyStat row(s)."
        if result.skipped_too_old:
            message += f" Skipped {result.skipped_too_old} hour(s) older than the retention (rollups kept as they are)."
        self.stdout.write(self.style.SUCCESS(message))
