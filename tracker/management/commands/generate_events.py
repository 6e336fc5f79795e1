"""manage.py generate_events: synthetic traffic (benchmarks, demos), stored and counted.

Events land in tracker_accessevent and are added to the per-endpoint counters (EndpointStat), so
they show in /stats, the admin and the analytics alike. PostgreSQL: COPY into the drain's staging
table and the drain's insert-and-count statement, one per chunk (tracker.services.store_generated_events;
fast: benchmarks load millions). SQLite (the embedded default): the drain's own portable path,
tracker.services.store_events, in chunks.
"""

import sys
import time
from datetime import UTC, datetime, timedelta

import iptocc
import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone

from tracker import services as tracker_services
from tracker.events import Event

CHUNK = 200_000
SQLITE_CHUNK = 5_000


class Command(BaseCommand):
    help = "Insert synthetic events spread over the last --days and count them per endpoint, with progress."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=1_000_000)
        parser.add_argument("--days", type=float, default=30.0)
        parser.add_argument("--endpoints", type=int, default=50)
        parser.add_argument("--clients", type=int, default=200_000, help="Distinct client addresses.")
        parser.add_argument("--error-rate", type=float, default=0.02)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--end-hours-ago", type=int, default=None, help="End this many whole hours before the current hour."
        )

    def handle(
        self,
        *args: object,
        count: int,
        days: float,
        endpoints: int,
        clients: int,
        error_rate: float,
        seed: int,
        end_hours_ago: int | None,
        **options: object,
    ) -> None:
        if count < 1 or days <= 0 or endpoints < 1 or clients < 1:
            raise CommandError("--count, --days, --endpoints and --clients must be positive.")
        rng = np.random.default_rng(seed)
        names = np.array([f"/api/v1/resource{i:02d}/<int:pk>" for i in range(endpoints)], dtype=object)
        # Each endpoint has its own typical latency; traffic is skewed (a few endpoints are busy).
        medians = rng.uniform(2.0, 80.0, size=endpoints)
        weights = 1.0 / np.arange(1, endpoints + 1) ** 0.8
        weights /= weights.sum()
        octets = rng.integers(1, 224, size=(clients, 4))
        ips = np.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in octets], dtype=object)
        codes = np.array([code or "" for code in iptocc.country_code(list(ips))], dtype=object)
        end = timezone.now()
        if end_hours_ago is not None:
            end = end.replace(minute=0, second=0, microsecond=0) - timedelta(hours=end_hours_ago)
        start_ts = (end - timedelta(days=days)).timestamp()
        span = days * 86400.0
        run_tag = f"{seed:08x}{int(time.time()) & 0xFFFFFFFF:08x}"
        started = time.monotonic()
        done = 0
        chunk_size = CHUNK if connection.vendor == "postgresql" else SQLITE_CHUNK
        chunks = (count + chunk_size - 1) // chunk_size
        for chunk in range(chunks):
            size = min(chunk_size, count - done)
            # Chronological chunks keep the time indexes append-mostly, as real traffic does.
            lo = start_ts + span * chunk / chunks
            stamps = np.sort(rng.uniform(lo, lo + span / chunks, size=size))
            which = rng.choice(endpoints, size=size, p=weights)
            durations = rng.lognormal(np.log(medians[which]), 0.6)
            errors = rng.random(size) < error_rate
            client = rng.integers(0, clients, size=size)
            if connection.vendor != "postgresql":
                events = [
                    Event(
                        event_id=f"{run_tag}{done + i:016x}",
                        endpoint=names[w],
                        method="GET",
                        status_code=500 if e else 200,
                        is_error=bool(e),
                        duration_ms=round(float(d), 3),
                        client_ip=ips[c],
                        user_agent="bench",
                        pod_name=f"web-{w % 4}",
                        occurred_at=datetime.fromtimestamp(float(ts), tz=UTC),
                    )
                    for i, (w, d, e, c, ts) in enumerate(zip(which, durations, errors, client, stamps, strict=True))
                ]
                tracker_services.store_events(events)
                done += size
                self._progress(done, count, done / max(time.monotonic() - started, 1e-9))
                continue
            # ISO times for the whole chunk at once (numpy), UTC.
            moments = np.datetime_as_string((stamps * 1e6).astype("datetime64[us]"), unit="us")
            lines = [
                f"{run_tag}{done + i:016x}\t{names[w]}\tGET\t{500 if e else 200}\t{'t' if e else 'f'}\t{d:.3f}\t"
                f"{ips[c]}\tbench\tweb-{w % 4}\t{codes[c]}\t{at}+00:00\n"
                for i, (w, d, e, c, at) in enumerate(zip(which, durations, errors, client, moments, strict=True))
            ]
            tracker_services.store_generated_events(lines)
            done += size
            rate = done / max(time.monotonic() - started, 1e-9)
            self._progress(done, count, rate)
        sys.stdout.write("\n")
        self.stdout.write(
            f"Inserted {done} events over {days:g} days, {endpoints} endpoints, in {time.monotonic() - started:.1f}s."
        )

    def _progress(self, done: int, total: int, rate: float) -> None:
        width = 30
        filled = int(width * done / total)
        eta = (total - done) / rate if rate else 0
        sys.stdout.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} {rate:,.0f} events/s, ETA {eta:,.0f}s"
        )
        sys.stdout.flush()
