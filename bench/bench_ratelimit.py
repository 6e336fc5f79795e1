"""Rate limiting cost: in-process decisions next to a bare Redis PING, and the limiter role's /check under gunicorn.

1. In process (this Python process, django-redis on REDIS_URL): blocks of PINGs and blocks of
   decisions (ratelimit.services.check_rate) alternate, so drift on a shared machine hits both
   alike. Redis round trips are counted on the client side (every packet redis-py sends), so
   other users of the same Redis server do not disturb the count. Target: a decision costs one
   round trip, whatever the number of counters.
2. The limiter role: gunicorn (2 sync workers, the Procfile's command) on a free loopback port,
   GET /check with a rotating client_ip; load from wrk when installed, else Python processes.
   Run twice side by side, with tracking off (the limiter's default) and on (TRACKING_ENABLED=true,
   opt-in), rounds interleaved.

Environment: DATABASE_URL, REDIS_URL (as `make bench` sets them); optional BENCH_RATELIMIT_DECISIONS
(default 20000), BENCH_RATELIMIT_ROUNDS (default 5), BENCH_RATELIMIT_SECONDS (default 8),
BENCH_RATELIMIT_CONNECTIONS (default 4), BENCH_LOADGEN=wrk|python.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import benchlib
from benchlib import BenchError

DECISIONS = int(os.environ.get("BENCH_RATELIMIT_DECISIONS", "20000"))
ROUNDS = int(os.environ.get("BENCH_RATELIMIT_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_RATELIMIT_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_RATELIMIT_CONNECTIONS", "4"))
BLOCKS = 10  # PING and decision blocks alternate this many times
CLIENTS = 500  # distinct client addresses the decisions rotate over
TARGET_ROUND_TRIPS = 1.0
# Limits so high nothing is refused: a refused decision costs the same round trips, and the
# /check load must stay all-200 to be comparable round to round.
RULES = {"/bench": "100000000/m", "/bench-burst": {"rate": "100000000/m", "burst": "10000000/10s"}}

# /check needs the limiter token (any value: the bench's limiter is given this one).
LIMITER_TOKEN = "bench-only-limiter-token"  # noqa: S105 - a throwaway value for a loopback server

# GET /check with a rotating client_ip, then the shared JSON summary.
WRK_SCRIPT = (
    f"""
wrk.headers["Authorization"] = "Bearer {LIMITER_TOKEN}"
counter = 0
request = function()
  counter = counter + 1
  local path = string.format("/check?endpoint=/bench&client_ip=10.%d.%d.%d",
    math.floor(counter / 65536) % 256, math.floor(counter / 256) % 256, counter % 256)
  return wrk.format("GET", path)
end"""
    + benchlib.WRK_REPORT_LUA
)


@dataclass(frozen=True)
class Timing:
    count: int
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def _timing(latencies_ns: list[int]) -> Timing:
    values = sorted(latencies_ns)
    return Timing(
        count=len(values),
        seconds=sum(values) / 1e9,
        p50_us=benchlib.percentile(values, 0.50) / 1000,
        p99_us=benchlib.percentile(values, 0.99) / 1000,
    )


# --- In process ------------------------------------------------------------------


class RoundTripCounter:
    """Counts what redis-py sends: one send per command (a pipeline would be one send for all)."""

    def __init__(self):
        from redis.connection import AbstractConnection

        self.sends = 0
        original = AbstractConnection.send_packed_command

        def counting(connection, command, check_health=True):
            self.sends += 1
            return original(connection, command, check_health)

        AbstractConnection.send_packed_command = counting


def in_process() -> dict:
    from django_redis import get_redis_connection

    from ratelimit import services

    counter = RoundTripCounter()
    redis_client = get_redis_connection("default")
    ips = [f"10.1.{i // 256}.{i % 256}" for i in range(CLIENTS)]
    per_block = max(1, DECISIONS // BLOCKS)

    # Warm up: connections open, rules loaded, the first decision of each client's window done.
    for ip in ips:
        services.check_rate(endpoint="/bench", client_ip=ip)
    redis_client.ping()

    pings, decisions = [], []
    ping_cpu = decision_cpu = 0.0  # this process's CPU time: the Python cost, without waiting on Redis
    sends_before = counter.sends
    for _ in range(BLOCKS):
        cpu = time.process_time()
        for _ in range(per_block // 4):
            started = time.perf_counter_ns()
            redis_client.ping()
            pings.append(time.perf_counter_ns() - started)
        ping_cpu += time.process_time() - cpu
        cpu = time.process_time()
        for i in range(per_block):
            started = time.perf_counter_ns()
            decision = services.check_rate(endpoint="/bench", client_ip=ips[i % CLIENTS])
            decisions.append(time.perf_counter_ns() - started)
            if decision.outcome != services.ALLOWED:
                raise BenchError(f"unexpected decision {decision.outcome} (is Redis up?)")
        decision_cpu += time.process_time() - cpu
    sends = counter.sends - sends_before - len(pings)
    steady_round_trips = sends / len(decisions)

    # First decision of a window (the counter does not exist yet): new clients.
    fresh_before = counter.sends
    fresh = 1000
    for i in range(fresh):
        services.check_rate(endpoint="/bench", client_ip=f"10.2.{i // 256}.{i % 256}")
    fresh_round_trips = (counter.sends - fresh_before) / fresh

    # A rule with a burst window counts in two counters.
    for ip in ips:
        services.check_rate(endpoint="/bench-burst", client_ip=ip)
    burst_latencies = []
    burst_before = counter.sends
    for i in range(per_block):
        started = time.perf_counter_ns()
        services.check_rate(endpoint="/bench-burst", client_ip=ips[i % CLIENTS])
        burst_latencies.append(time.perf_counter_ns() - started)
    burst_round_trips = (counter.sends - burst_before) / per_block
    return {
        "ping": _timing(pings),
        "decision": _timing(decisions),
        "burst": _timing(burst_latencies),
        "ping_cpu_us": 1e6 * ping_cpu / len(pings),
        "decision_cpu_us": 1e6 * decision_cpu / len(decisions),
        "steady_round_trips": steady_round_trips,
        "fresh_round_trips": fresh_round_trips,
        "burst_round_trips": burst_round_trips,
    }


# --- The limiter role under gunicorn ------------------------------------------------


@dataclass(frozen=True)
class Round(benchlib.LoadRound):
    @property
    def cpu_us_per_request(self) -> float:
        """Less sensitive to a busy machine than req/s: CPU spent, not time waited."""
        return 1000 * self.server_cpu_ms / self.requests if self.requests else float("nan")


def limiter_server(*, tracking: bool, database_url: str, key_prefix: str, workdir: Path) -> benchlib.GunicornRole:
    """gunicorn --config python:endpointstats.gunicorn_limiter with the bench's RULES."""
    return benchlib.GunicornRole(
        role="limiter",
        name="limiter",
        tracking=tracking,
        database_url=database_url,
        key_prefix=key_prefix,
        workdir=workdir,
        env={"RATE_LIMITS": json.dumps(RULES), "POD_NAME": "bench-limiter", "LIMITER_TOKEN": LIMITER_TOKEN},
    )


def check_path(n: int) -> str:
    """The n-th /check request of the Python load client: a rotating client address."""
    return f"/check?endpoint=/bench&client_ip=10.3.{(n // 256) % 256}.{n % 256}"


def limiter_role(*, database_url: str, prefixes: dict[bool, str]) -> tuple[dict[bool, list[Round]], bool]:
    use_wrk = benchlib.use_wrk()
    benchlib.REQUEST_HEADERS["Authorization"] = f"Bearer {LIMITER_TOKEN}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    script = workdir / "check.lua"
    script.write_text(WRK_SCRIPT)
    servers = {
        tracking: limiter_server(tracking=tracking, database_url=database_url, key_prefix=prefix, workdir=workdir)
        for tracking, prefix in prefixes.items()
    }

    def load(server: benchlib.GunicornRole, seconds: float) -> Round:
        cpu_before = server.cpu_seconds()
        if use_wrk:
            result = benchlib.run_wrk(
                url=server.url, seconds=seconds, connections=CONNECTIONS, script=script, result_type=Round
            )
        else:
            result = benchlib.run_python(
                port=server.port, seconds=seconds, connections=CONNECTIONS, path=check_path, result_type=Round
            )
        return replace(result, server_cpu_ms=1000 * (server.cpu_seconds() - cpu_before))

    try:
        rounds = benchlib.interleaved_rounds(
            servers,
            load=load,
            rounds=ROUNDS,
            seconds=SECONDS,
            warmup_seconds=2.0,
            progress="  /check round {round} tracking {mode:3}: {result.rps:7.0f} req/s, "
            "p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
            "gunicorn CPU {result.cpu_us_per_request:.0f} us/req",
            failure="{result.failures} failed /check request(s) (tracking {mode})",
        )
    except BenchError:
        for server in servers.values():
            print(
                f"--- limiter (tracking {benchlib.mode(server.tracking)}) log ---\n{server.log_tail()}", file=sys.stderr
            )
        raise
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rounds, use_wrk


# --- Report --------------------------------------------------------------------------


def report(results: dict, rounds: dict[bool, list[Round]], *, use_wrk: bool) -> str:
    from run_all import machine

    ping, decision, burst = results["ping"], results["decision"], results["burst"]
    steady = results["steady_round_trips"]
    verdict = "met" if steady <= TARGET_ROUND_TRIPS + 0.01 else "MISSED"
    loadgen = (
        f"wrk (1 thread, {CONNECTIONS} connections)" if use_wrk else f"Python http.client ({CONNECTIONS} processes)"
    )
    lines = [
        "## Rate limiting",
        "",
        f"Machine: {machine()}. Redis {_redis_version()} on 127.0.0.1 (shared with other users of the machine).",
        "",
        f"**In process** (one Python thread, django-redis): {ping.count} PINGs and {decision.count} decisions "
        f"in {BLOCKS} alternating blocks; decisions rotate over {CLIENTS} client addresses.",
        "",
        "| operation | ops/s | p50 µs | p99 µs | client CPU µs/op | Redis round trips |",
        "|---|---:|---:|---:|---:|---:|",
        f"| bare Redis `PING` | {ping.per_second:.0f} | {ping.p50_us:.0f} | {ping.p99_us:.0f} | "
        f"{results['ping_cpu_us']:.0f} | 1 |",
        f"| decision (`services.check_rate`), counter exists | {decision.per_second:.0f} | {decision.p50_us:.0f} | "
        f"{decision.p99_us:.0f} | {results['decision_cpu_us']:.0f} | {steady:.2f} |",
        f"| decision, first of a client's window | | | | | {results['fresh_round_trips']:.2f} |",
        f"| decision, rule with a burst window | {burst.per_second:.0f} | {burst.p50_us:.0f} | {burst.p99_us:.0f} | "
        f"| {results['burst_round_trips']:.2f} |",
        "",
        f"A decision costs **{decision.p50_us / ping.p50_us:.1f}x** a PING round trip at p50 "
        f"({decision.p99_us / ping.p99_us:.1f}x at p99): {steady:.2f} round trips (one `EVALSHA` of the "
        "script that `INCR`s every counter of the request) plus "
        f"{results['decision_cpu_us']:.0f} µs of client CPU, Python and its socket calls "
        f"({results['ping_cpu_us']:.0f} µs for a PING). Target at most {TARGET_ROUND_TRIPS:.0f} round "
        f"trips: **{verdict}**. A rule with a burst window counts in two counters, in the same round trip.",
        "",
        f"**Limiter role** `GET /check` under gunicorn (2 sync workers, `endpointstats.gunicorn_limiter`), "
        f"load {loadgen}, {ROUNDS} rounds of {SECONDS:.0f} s per mode, interleaved; a new TCP connection per "
        "request; tracking off is the limiter's default, on is the opt-in `TRACKING_ENABLED=true`.",
        "",
        "| round | tracking | req/s | p50 ms | p99 ms | gunicorn CPU µs/req |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for index, (a, b) in enumerate(zip(rounds[True], rounds[False], strict=True)):
        for mode, r in (("on", a), ("off", b)):
            lines.append(
                f"| {index + 1} | {mode} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us_per_request:.0f} |"
            )
    for tracking in (True, False):
        rs = rounds[tracking]
        lines.append(
            f"| **median** | **{benchlib.mode(tracking)}** | **{benchlib.median([r.rps for r in rs]):.0f}** | "
            f"**{benchlib.median([r.p50_ms for r in rs]):.2f}** | **{benchlib.median([r.p99_ms for r in rs]):.2f}** | "
            f"**{benchlib.median([r.cpu_us_per_request for r in rs]):.0f}** |"
        )
    on, off = (benchlib.median([r.rps for r in rounds[t]]) for t in (True, False))
    pairs = [a.rps / b.rps for a, b in zip(rounds[True], rounds[False], strict=True)]
    lines += [
        "",
        f"`/check` throughput with tracking on / off: {on / off:.3f} (medians; per-round pairs "
        f"{', '.join(f'{r:.2f}' for r in pairs)}, median {benchlib.median(pairs):.2f}).",
        "",
    ]
    return "\n".join(lines)


def _redis_version() -> str:
    from django_redis import get_redis_connection

    return get_redis_connection("default").info("server").get("redis_version", "?")


def main() -> int:
    database_url, _ = benchlib.require_env()
    bench_url = benchlib.bench_database_url(database_url)
    benchlib.migrate(bench_url)
    os.environ["RATE_LIMITS"] = json.dumps(RULES)
    prefix = benchlib.new_key_prefix("ratelimit")
    prefixes = {True: benchlib.new_key_prefix("limiter-on"), False: benchlib.new_key_prefix("limiter-off")}
    benchlib.setup_django(database_url=bench_url, key_prefix=prefix)
    try:
        results = in_process()
        ping_p50, decision_p50 = results["ping"].p50_us, results["decision"].p50_us
        print(
            f"  in process: PING p50 {ping_p50:.0f} us, decision p50 {decision_p50:.0f} us, "
            f"{results['steady_round_trips']:.2f} round trips",
            file=sys.stderr,
            flush=True,
        )
        rounds, use_wrk = limiter_role(database_url=bench_url, prefixes=prefixes)
    finally:
        for key_prefix in (prefix, *prefixes.values()):
            benchlib.delete_redis_keys(key_prefix)
    print(report(results, rounds, use_wrk=use_wrk))
    if results["steady_round_trips"] > TARGET_ROUND_TRIPS + 0.01:
        raise BenchError(f"a decision costs {results['steady_round_trips']:.2f} round trips (target 1)")
    return 0


if __name__ == "__main__":
    benchlib.run_script(main, name="bench_ratelimit")
