"""manage.py prune_events: drop day partitions and delete raw events older than ANALYTICS_RETENTION_DAYS."""

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from analytics.services import retention


class Command(BaseCommand):
    help = "Delete raw events older than ANALYTICS_RETENTION_DAYS in bounded batches (rollups are kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per batch (ANALYTICS_PRUNE_BATCH_SIZE).")
        parser.add_argument("--pause", type=float, default=0.0, help="Seconds to sleep between batches.")

    def handle(self, *args: object, batch_size: int | None = None, pause: float = 0.0, **options: object) -> None:
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")

        def progress(deleted: int, batches: int) -> None:
            self.stdout.write(f"\rdeleted {deleted:,} events in {batches} batch(es)", ending="")
            self.stdout.flush()

        result = retention.prune_events(
            now=timezone.now(), batch_size=batch_size, pause_seconds=pause, progress=progress
        )
        self.stdout.write("")
        if result.dropped_partitions:
            self.stdout.write(
                f"Dropped {len(result.dropped_partitions)} day partition(s) "
                f"(about {result.dropped_events_estimate:,} raw events): {', '.join(result.dropped_partitions)}."
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {result.deleted:,} raw event(s) older than {result.cutoff:%Y-%m-%d %H:%M} UTC "
                f"in {result.batches} batch(es); slowest batch {result.slowest_batch_seconds * 1000:.0f} ms."
            )
        )
