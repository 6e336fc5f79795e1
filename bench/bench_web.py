"""The hot path against the framework floor: GET / and GET /stats (warm) on the web role, per component.

Eight gunicorn servers run side by side with the same gunicorn settings (the web role's config,
2 sync workers): the floor (bench/floor.py: Django + DRF returning the same JSON, no middleware,
no database, no Redis), the floor + round trip (the same, plus one bare Redis `PING` per request:
the least any design pays that has each event in Redis before its response) and the web role in
five configurations: everything on (tracking, rate limiting, request metrics: as deployed),
tracking off, limiting off, metrics off, all off; and on GET / everything on with a limit of 1,
so that every request is refused (one client flooding over its limit). Elsewhere limits are raised
so that nothing is refused (every decision still counts in Redis). Each round
loads every (server, path) case once, starting one case further along each round, so drift on a
shared machine spreads over all of them. Per case: req/s, p50/p99, and the CPU time per request
of the gunicorn processes (/proc/<pid>/stat of master and workers) and of redis-server (INFO cpu).
What a component costs is the difference between everything on and that component off.

Afterwards the all-on server's buffered events are drained and counted against the responses it
gave (every served request counted exactly once), plus an exact pass of a fixed number of requests.

Environment: DATABASE_URL, REDIS_URL (as `make bench` sets them); optional BENCH_WEB_ROUNDS (rounds,
default 5), BENCH_WEB_SECONDS (per case and round, default 4), BENCH_WEB_CONNECTIONS (default 4),
BENCH_LOADGEN=wrk|python.
"""

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import benchlib
from benchlib import BenchError

ROUNDS = int(os.environ.get("BENCH_WEB_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_WEB_SECONDS", "4"))
CONNECTIONS = int(os.environ.get("BENCH_WEB_CONNECTIONS", "4"))
WARMUP_SECONDS = 2.0
EXACT_REQUESTS = 1000  # the exact sanity pass: this many requests, this many events
SEEDED_ENDPOINTS = 12  # rows /stats lists (besides / and /stats)
PATHS = ("/", "/stats")
FLOOR = "floor"
# The floor plus one bare Redis round trip per request: the least a design pays that puts every
# request's event in Redis before the response (the guarantee), so the web role's true overhead is
# what all on costs beyond it.
FLOOR_ROUND_TRIP = "floor + round trip"
BASELINES = (FLOOR, FLOOR_ROUND_TRIP)
# Limits nothing reaches: every request is still counted in Redis, none is refused.
RULES = json.dumps({"/": 1_000_000_000, "/stats": 1_000_000_000, "default": 1_000_000_000})
# name -> (tracking, limiting, request metrics)
CONFIGS = {
    "all on": (True, True, True),
    "tracking off": (False, True, True),
    "limiting off": (True, False, True),
    "metrics off": (True, True, False),
    "all off": (False, False, False),
}
COMPONENTS = {"tracking": "tracking off", "limiting": "limiting off", "metrics": "metrics off"}
# All on, with a limit of 1 on "/": one client flooding over its limit, every request of the round a 429
# (each still counted, tracked and answered with the rate-limit headers). Loaded on GET / only.
REFUSED = "all on, refused"
REFUSED_RULES = json.dumps({"/": 1, "/stats": 1_000_000_000, "default": 1_000_000_000})
TARGET_FLOOR_SHARE = 0.50  # GET / and GET /stats all on: at least half the floor's req/s
TARGET_P99_FACTOR = 2.0  # GET / all on: p99 at most twice the floor's
# All on at least 0.85x the floor + one bare round trip: what tracking, limiting and metrics add beyond the one
# round trip exact shared limits need costs at most 15%. The issue asked 0.85x all off, which no design with exact
# shared limits can reach where one round trip alone costs more than 15% of a request (see the verdicts).
TARGET_ON_OFF = 0.85


@dataclass(frozen=True)
class Round(benchlib.LoadRound):
    redis_cpu_ms: float = 0.0  # CPU time of redis-server during the round (all its clients)

    @property
    def server_cpu_us_per_request(self) -> float:
        return 1000 * self.server_cpu_ms / self.requests if self.requests else 0.0

    @property
    def redis_cpu_us_per_request(self) -> float:
        return 1000 * self.redis_cpu_ms / self.requests if self.requests else 0.0


def web_server(*, name: str, database_url: str, key_prefix: str, workdir: Path) -> benchlib.GunicornRole:
    tracking, limiting, metrics = CONFIGS["all on" if name == REFUSED else name]
    return benchlib.GunicornRole(
        role="web",
        name="web",
        label=name.replace(" ", "-").replace(",", ""),
        tracking=tracking,
        database_url=database_url,
        key_prefix=key_prefix,
        workdir=workdir,
        env={
            "POD_NAME": "bench-web",
            "RATE_LIMITS": REFUSED_RULES if name == REFUSED else RULES,
            # "/" is a prefix of every path: the limiter middleware stays, decides nothing.
            "RATELIMIT_EXEMPT_PATHS": "/health,/metrics" if limiting else "/",
            "REQUEST_METRICS_ENABLED": "true" if metrics else "false",
        },
    )


def floor_server(
    *, database_url: str, key_prefix: str, workdir: Path, stats_file: Path, redis_url: str = ""
) -> benchlib.GunicornRole:
    return benchlib.GunicornRole(
        role="web",
        name="web",
        label=(FLOOR_ROUND_TRIP if redis_url else FLOOR).replace(" ", "-"),
        tracking=False,
        database_url=database_url,
        key_prefix=key_prefix,
        workdir=workdir,
        env={
            "POD_NAME": "bench-web",
            "DJANGO_SETTINGS_MODULE": "bench.floor",
            "BENCH_FLOOR_STATS_FILE": str(stats_file),
            "BENCH_FLOOR_REDIS_URL": redis_url,
        },
    )


def _redis_cpu_seconds() -> float:
    from django_redis import get_redis_connection

    info = get_redis_connection("default").info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _seed(now: datetime) -> None:
    """Counters for a few endpoints, so /stats lists a realistic number of rows."""
    from tracker import services
    from tracker.events import Event

    events = [
        Event(endpoint=f"/bench/{i}", occurred_at=now, method="GET", status_code=200, duration_ms=1.0 + i)
        for i in range(SEEDED_ENDPOINTS)
        for _ in range(3)
    ]
    services.store_events(events)


# --- The benchmark -------------------------------------------------------------


def main() -> int:
    database_url, redis_url = benchlib.require_env()
    bench_url = benchlib.bench_database_url(database_url)
    benchlib.migrate(bench_url)
    names = [*CONFIGS, REFUSED, *BASELINES]
    prefixes = {name: benchlib.new_key_prefix("web-" + name.replace(" ", "-").replace(",", "")) for name in names}
    benchlib.setup_django(database_url=bench_url, key_prefix=prefixes["all on"])

    from django.db import connection

    from tracker import services
    from tracker.models import AccessEvent, EndpointStat

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {AccessEvent._meta.db_table}, {EndpointStat._meta.db_table}")
    _seed(datetime.now(UTC))

    use_wrk = benchlib.use_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    script = workdir / "report.lua"
    script.write_text(benchlib.WRK_REPORT_LUA)
    servers = {
        name: web_server(name=name, database_url=bench_url, key_prefix=prefixes[name], workdir=workdir)
        for name in [*CONFIGS, REFUSED]
    }
    # Responses the all-on server gave to GET /, and how many more may have been in flight when
    # wrk stopped (served and tracked, but not counted by wrk).
    tracked_responses = tracked_in_flight = 0

    def load(name: str, path: str, seconds: float) -> Round:
        server = servers[name]
        cpu_before, redis_before = server.cpu_seconds(), _redis_cpu_seconds()
        if use_wrk:
            result = benchlib.run_wrk(
                url=server.url + path.lstrip("/"),
                seconds=seconds,
                connections=CONNECTIONS,
                script=script,
                result_type=Round,
            )
        else:
            result = benchlib.run_python(
                port=server.port, seconds=seconds, connections=CONNECTIONS, path=path, result_type=Round
            )
        result = replace(
            result,
            server_cpu_ms=1000 * (server.cpu_seconds() - cpu_before),
            redis_cpu_ms=1000 * (_redis_cpu_seconds() - redis_before),
        )
        if name == REFUSED:  # every response a 429, but the first of a minute's window
            if result.requests - result.non2xx > 2:
                raise BenchError(f"{name}: {result.requests - result.non2xx} of {result.requests} requests admitted")
            result = replace(result, failures=result.failures - result.non2xx)
        nonlocal tracked_responses, tracked_in_flight
        if name == "all on" and path == "/":
            tracked_responses += result.requests
            tracked_in_flight += CONNECTIONS if use_wrk else 0
        return result

    try:
        # The floor answers the very /stats body the web role gives (same rows, same JSON).
        servers["all off"].wait_ready()
        status, body = benchlib.http_get_body(servers["all off"].port, "/stats")
        if status != 200:
            raise BenchError(f"/stats answered {status}")
        stats_file = workdir / "stats.json"
        stats_file.write_bytes(body)
        for name in BASELINES:
            servers[name] = floor_server(
                database_url=bench_url,
                key_prefix=prefixes[name],
                workdir=workdir,
                stats_file=stats_file,
                redis_url=redis_url if name == FLOOR_ROUND_TRIP else "",
            )
        cases = [(name, path) for path in PATHS for name in [*BASELINES, *CONFIGS]]
        cases += [(REFUSED, "/")] if use_wrk else []  # wrk tells 429s from failures; the Python client does not
        results = benchlib.interleaved_configs(
            servers,
            cases=cases,
            load=load,
            rounds=ROUNDS,
            seconds=SECONDS,
            warmup_seconds=WARMUP_SECONDS,
            progress=lambda index, name, path, r: (
                f"  round {index} {path:6} {name:18}: {r.rps:6.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                f"p99 {r.p99_ms:.2f} ms, gunicorn {r.server_cpu_us_per_request:4.0f} us/req, "
                f"redis {r.redis_cpu_us_per_request:3.0f} us/req"
            ),
        )

        # Sanity 1: every GET / the all-on server answered became exactly one stored event.
        drained = services.drain_buffer(time_budget_seconds=300)
        stored = AccessEvent.objects.filter(endpoint="/").count()
        counted = EndpointStat.objects.get(endpoint="/").access_count
        if not tracked_responses <= stored <= tracked_responses + tracked_in_flight or counted != stored:
            raise BenchError(
                f"the all-on server answered {tracked_responses} GET / (+ at most {tracked_in_flight} in flight) "
                f"but {stored} events were stored and counters say {counted}"
            )
        # Sanity 2, exact: a fixed number of requests gives exactly that many events.
        exact = benchlib.run_python(port=servers["all on"].port, seconds=60, connections=2, max_requests=EXACT_REQUESTS)
        services.drain_buffer(time_budget_seconds=60)
        exact_stored = AccessEvent.objects.filter(endpoint="/").count() - stored
        if exact.requests != EXACT_REQUESTS or exact_stored != EXACT_REQUESTS:
            raise BenchError(f"sent {EXACT_REQUESTS} requests, got {exact.requests} responses, stored {exact_stored}")
    except BenchError:
        for server in servers.values():
            print(f"--- gunicorn ({server.label}) log tail ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        for server in servers.values():
            server.stop()
        for prefix in prefixes.values():
            benchlib.delete_redis_keys(prefix)
        shutil.rmtree(workdir, ignore_errors=True)

    sanity = (
        f"Sanity: the all-on server answered {tracked_responses} `GET /` as counted by the load generator "
        f"(warm-up included; up to {tracked_in_flight} more may have been in flight when it stopped); the drain "
        f"stored {stored} `/` events in {drained.batches} batch(es) and the `/` counter says {counted}. An exact "
        f"pass of {EXACT_REQUESTS} more requests stored exactly {exact_stored} events."
    )
    print(_report(results, use_wrk=use_wrk, sanity=sanity))
    return 0


def _median(rounds: list[Round], attribute: str) -> float:
    return benchlib.median([getattr(r, attribute) for r in rounds])


def _cpu(rounds: list[Round]) -> float:
    return _median(rounds, "server_cpu_us_per_request")


def _redis(rounds: list[Round]) -> float:
    return _median(rounds, "redis_cpu_us_per_request")


def _paired_ratios(rounds: list[Round], baselines: list[Round]) -> list[float]:
    """req/s of each round over its baseline's in the same round (both loaded minutes apart at most):
    drift of a shared machine cancels out of each pair."""
    return [r.rps / b.rps for r, b in zip(rounds, baselines, strict=True)]


def _ceiling(*, all_off: list[Round], floor: list[Round], round_trip: list[Round]) -> float:
    """all off / (all off + one bare round trip), by time per request in the closed loop: the most any design
    that makes one round trip per request can reach of all off's req/s (the round trip's time is what it adds
    to the floor's request in the same rounds)."""
    added = 1 / _median(round_trip, "rps") - 1 / _median(floor, "rps")
    per_request = 1 / _median(all_off, "rps")
    return per_request / (per_request + added)


def _report(results: dict[tuple[str, str], list[Round]], *, use_wrk: bool, sanity: str) -> str:
    loadgen = (
        f"wrk (1 thread, {CONNECTIONS} connections)"
        if use_wrk
        else f"Python http.client ({CONNECTIONS} processes; wrk not installed)"
    )
    lines = [
        "## The hot path against the framework floor (web)",
        "",
        f"gunicorn with the web role's config (2 sync workers) on 127.0.0.1; load: {loadgen}; {ROUNDS} rounds of "
        f"{SECONDS:.0f} s per case, every case once per round, the order rotating; a new TCP connection per request. "
        "Medians of the rounds (req/s also min-max); CPU per request of gunicorn (master + workers) and redis-server.",
        "",
    ]
    verdicts = []
    for path in PATHS:
        floor = results[(FLOOR, path)]
        floor_rps, floor_p99 = _median(floor, "rps"), _median(floor, "p99_ms")
        lines += [
            f"### `GET {path}`" + (" (warm)" if path == "/stats" else ""),
            "",
            "| server | req/s | min-max | share of the floor | p50 ms | p99 ms "
            "| gunicorn CPU µs/req | redis CPU µs/req |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in [*BASELINES, *CONFIGS, REFUSED]:
            if (name, path) not in results:
                continue
            rounds = results[(name, path)]
            rps = _median(rounds, "rps")
            lines.append(
                f"| {name} | {rps:.0f} | {min(r.rps for r in rounds):.0f}-{max(r.rps for r in rounds):.0f} | "
                f"{100 * rps / floor_rps:.0f}% | {_median(rounds, 'p50_ms'):.2f} | {_median(rounds, 'p99_ms'):.2f} | "
                f"{_cpu(rounds):.0f} | {_redis(rounds):.0f} |"
            )
        on = results[("all on", path)]
        lines += ["", "What each component costs (everything on minus that component off; medians):", ""]
        for component, off_name in COMPONENTS.items():
            off = results[(off_name, path)]
            lines.append(
                f"- {component}: gunicorn "
                f"{_cpu(on) - _cpu(off):+.0f} µs/req, redis {_redis(on) - _redis(off):+.0f} µs/req, "
                f"throughput x{_median(on, 'rps') / _median(off, 'rps'):.2f}"
            )
        all_off = results[("all off", path)]
        lines.append(
            f"- the rest of the web role (all off minus the floor: middleware, view, cache): gunicorn "
            f"{_cpu(all_off) - _cpu(floor):+.0f} µs/req, redis {_redis(all_off) - _redis(floor):+.0f} µs/req"
        )
        round_trip = results[(FLOOR_ROUND_TRIP, path)]
        lines.append(
            f"- one bare Redis round trip (floor + round trip minus the floor): gunicorn "
            f"{_cpu(round_trip) - _cpu(floor):+.0f} µs/req, redis {_redis(round_trip) - _redis(floor):+.0f} µs/req, "
            f"throughput x{_median(round_trip, 'rps') / floor_rps:.2f}"
        )
        lines.append(
            f"- all on beyond the floor + round trip: gunicorn {_cpu(on) - _cpu(round_trip):+.0f} µs/req, "
            f"redis {_redis(on) - _redis(round_trip):+.0f} µs/req"
        )
        if (REFUSED, path) in results:
            refused = results[(REFUSED, path)]
            lines.append(
                f"- a refused request (one client flooding over its limit, all on): gunicorn "
                f"{_cpu(refused) - _cpu(on):+.0f} µs/req, redis {_redis(refused) - _redis(on):+.0f} µs/req against "
                f"an admitted one, throughput x{_median(refused, 'rps') / _median(on, 'rps'):.2f}"
            )
        lines.append("")
        share = _median(on, "rps") / floor_rps
        on_off = _median(on, "rps") / _median(all_off, "rps")
        ceiling = _ceiling(all_off=all_off, floor=floor, round_trip=round_trip)
        paired = _paired_ratios(on, round_trip)
        on_round_trip = benchlib.median(paired)
        verdicts.append(
            f"`GET {path}` all on: {100 * share:.0f}% of the floor (target ≥ {100 * TARGET_FLOOR_SHARE:.0f}%: "
            f"**{'met' if share >= TARGET_FLOOR_SHARE else 'MISSED'}**)"
        )
        verdicts.append(
            f"`GET {path}` all on / all off {on_off:.2f} (the issue's ≥ {TARGET_ON_OFF}: "
            f"**{'met' if on_off >= TARGET_ON_OFF else 'MISSED'}**). Its ceiling for any design with exact shared "
            f"limits, which asks the shared counters before answering: all off plus one bare round trip (the time "
            f"it adds to the floor's request) / all off = {ceiling:.2f}; all on reaches {100 * on_off / ceiling:.0f}% "
            f"of it"
        )
        verdicts.append(
            f"`GET {path}` all on / (floor + round trip), per round: median {on_round_trip:.2f} "
            f"({min(paired):.2f}-{max(paired):.2f}) (target ≥ {TARGET_ON_OFF}: "
            f"**{'met' if on_round_trip >= TARGET_ON_OFF else 'MISSED'}**)"
        )
        if path == "/":
            p99_factor = _median(on, "p99_ms") / floor_p99
            verdicts.append(
                f"`GET /` all on p99 {p99_factor:.2f}x the floor's (target ≤ {TARGET_P99_FACTOR:.0f}x: "
                f"**{'met' if p99_factor <= TARGET_P99_FACTOR else 'MISSED'}**)"
            )
    lines += ["Targets:", ""] + [f"- {v}" for v in verdicts] + ["", sanity, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_web failed")
