"""Helpers shared by the bench_*.py scripts: the bench database, Django set-up, small statistics,
gunicorn roles under load (wrk or Python clients), report pieces and the script entry point.

Benchmarks never write into the database that DATABASE_URL names (the developer's data):
they use a sibling database "<name>_bench", created and migrated on demand, and their own
Redis key prefix, removed at the end.
"""

import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/bench_x.py`: make the project importable
    sys.path.insert(0, str(ROOT))

from system.processes import free_port, start_gunicorn, stop_process_group  # noqa: E402 - needs the path above


class BenchError(Exception):
    """The benchmark could not run or its sanity check failed (the script exits non-zero)."""


def require_env() -> tuple[str, str]:
    """DATABASE_URL (PostgreSQL) and REDIS_URL, as `make bench` sets them."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith("postgres") or not redis_url.startswith("redis"):
        raise BenchError("Set DATABASE_URL (PostgreSQL) and REDIS_URL (Redis); `make bench` does.")
    return database_url, redis_url


def bench_database_url(database_url: str) -> str:
    """The sibling bench database's URL ("<name>_bench"), created if missing."""
    import psycopg2

    from scripts.databases import create_database_if_missing

    url = urlparse(database_url)
    name = url.path.lstrip("/") or "endpointstats"
    bench_name = name if name.endswith("_bench") else f"{name}_bench"
    bench_url = urlunparse(url._replace(path=f"/{bench_name}"))
    try:
        create_database_if_missing(bench_url)
    except psycopg2.Error as error:
        raise BenchError(f"PostgreSQL at {url.hostname}:{url.port or 5432} is unreachable: {error}") from None
    return bench_url


def migrate(database_url: str) -> None:
    """Bring the bench database to the current schema (migrations own it)."""
    env = os.environ | {"DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchError(f"migrate failed on the bench database:\n{result.stderr[-2000:]}")


def setup_django(*, database_url: str, key_prefix: str) -> None:
    """Configure Django in this process against the bench database and a private Redis key prefix."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["CACHE_KEY_PREFIX"] = key_prefix
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key")
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # this process keeps its metrics in memory
    import django

    django.setup()


def new_key_prefix(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


def delete_redis_keys(prefix: str) -> None:
    """Remove every key under a bench key prefix."""
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def sibling_database(base: str, suffix: str) -> str:
    """ "<name>_<suffix>" next to DATABASE_URL's database, created if missing."""
    url = urlparse(base)
    name = (url.path.lstrip("/") or "endpointstats").removesuffix("_bench")
    return bench_database_url(urlunparse(url._replace(path=f"/{name}_{suffix}")))


def drop_database(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    admin = psycopg2.connect(urlunparse(parsed._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')
    admin.close()


def run_in_scratch_database(suffix: str, run: Callable[[], int]) -> int:
    """Run a benchmark against a database of its own ("<name>_<suffix>", migrated first) with a Redis
    key prefix of its own; both are removed afterwards, whatever happens."""
    base, _ = require_env()
    url = sibling_database(base, suffix)
    migrate(url)
    prefix = new_key_prefix(suffix.removesuffix("_bench"))
    setup_django(database_url=url, key_prefix=prefix)
    try:
        return run()
    finally:
        from django.db import connection

        connection.close()
        drop_database(url)
        delete_redis_keys(prefix)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def mode(tracking: bool) -> str:
    """ "on" or "off": how reports and progress lines name a tracking mode."""
    return "on" if tracking else "off"


def run_script(main: Callable[[], int], *, name: str) -> NoReturn:
    """Run a benchmark's main() as a script: exit with its return code, or print "<name>: <error>"
    on stderr and exit 1 when it raises BenchError (no traceback for an expected failure)."""
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"{name}: {error}", file=sys.stderr)
        sys.exit(1)


# --- Processes and HTTP --------------------------------------------------------------


# Headers every Python load client sends (e.g. the limiter's token); set before the clients fork.
REQUEST_HEADERS: dict[str, str] = {}


def http_get(port: int, path: str) -> int:
    """GET http://127.0.0.1:<port><path> on a new connection; the response status (body read and dropped).

    Raises OSError when the server cannot be reached or the 10 s timeout passes."""
    return http_get_body(port, path)[0]


def http_get_body(port: int, path: str) -> tuple[int, bytes]:
    """As http_get, returning the status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=REQUEST_HEADERS)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc); 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its direct children so far (gunicorn: master + workers)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # fields[1] is the parent pid
            pids.append(int(stat.parent.name))
    return sum(process_cpu_seconds(child) for child in pids)


class GunicornRole:
    """One role of the app under gunicorn (the Procfile's command, 2 sync workers) on a free loopback port.

    role "web" or "limiter" picks endpointstats.gunicorn_<role> and the <ROLE>_PORT variable. The
    server uses the given database and CACHE_KEY_PREFIX, TRACKING_ENABLED=<tracking>, its own
    Prometheus directory and its own log file "<name>-on|off.log" in workdir; `env` adds or
    overrides variables. Call wait_ready() before loading it and stop() always.
    """

    def __init__(
        self,
        *,
        role: str,
        name: str,
        tracking: bool,
        database_url: str,
        key_prefix: str,
        workdir: Path,
        env: dict[str, str],
        label: str | None = None,
    ):
        self.name = name
        self.tracking = tracking
        self.label = label or mode(tracking)  # names the log and Prometheus directory (unique per server)
        self.port = free_port()
        self.key_prefix = key_prefix
        self.log_path = workdir / f"{name}-{self.label}.log"
        process_env = os.environ | {
            "DATABASE_URL": database_url,
            "CACHE_KEY_PREFIX": key_prefix,
            "TRACKING_ENABLED": "true" if tracking else "false",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prometheus-{self.label}"),
            "GUNICORN_ACCESS_LOG": "false",
            "LOG_LEVEL": "WARNING",
        }
        process_env.pop("DJANGO_SETTINGS_MODULE", None)  # the project's settings, unless env names others
        process_env |= env
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.process = start_gunicorn(role=role, port=self.port, env=process_env, workers=2, stdout=self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once /health/live answers 200; BenchError (with the log tail) if gunicorn exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if http_get(self.port, "/health/live") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"{self.name} on port {self.port} did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the master and its workers so far (Linux /proc)."""
        return process_tree_cpu_seconds(self.process.pid)

    def log_tail(self) -> str:
        """The last 30 lines of the server's log."""
        self.log.flush()
        return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])

    def stop(self) -> None:
        """Terminate (kill after 20 s) and close the log; safe to call when it already exited."""
        stop_process_group(self.process, timeout=20)
        self.log.close()


# --- Load generators -------------------------------------------------------------------


@dataclass(frozen=True)
class LoadRound:
    """What one load run measured; scripts subclass it to add their own figures."""

    requests: int  # successful responses received
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int  # non-2xx responses and socket errors
    server_cpu_ms: float = 0.0  # CPU time of the gunicorn processes during the round
    non2xx: int = 0  # of the failures, the responses that came with a non-2xx status (wrk only)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


R = TypeVar("R", bound=LoadRound)

# The end of every wrk script: wrk prints one JSON line when done (latencies in microseconds).
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def use_wrk() -> bool:
    """Load with wrk unless BENCH_LOADGEN=python or wrk is not installed."""
    return os.environ.get("BENCH_LOADGEN", "wrk") == "wrk" and shutil.which("wrk") is not None


def run_wrk(*, url: str, seconds: float, connections: int, script: Path, result_type: type[R] = LoadRound) -> R:
    """wrk with 1 thread and `connections` connections for `seconds` (whole, at least 1) against url.

    script must end with WRK_REPORT_LUA. BenchError if wrk fails or prints no summary."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    summary = next((line for line in result.stdout.splitlines() if line.startswith("{")), None)
    if result.returncode != 0 or summary is None:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data = json.loads(summary)
    return result_type(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        failures=data["non2xx"] + data["socket_errors"],
        non2xx=data["non2xx"],
    )


def _python_client(args: tuple[int, float, int, str | Callable[[int], str], int]) -> tuple[list[float], int]:
    """One client process: sequential GETs (a new connection each: gunicorn's sync workers close it)."""
    port, seconds, max_requests, path, offset = args
    latencies, failures, n = [], 0, offset
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(latencies) + failures < max_requests:
        n += 1
        started = time.perf_counter()
        try:
            status = http_get(port, path if isinstance(path, str) else path(n))
        except OSError:
            failures += 1
            continue
        if status == 200:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
    return latencies, failures


def run_python(
    *,
    port: int,
    seconds: float,
    connections: int,
    path: str | Callable[[int], str] = "/",
    max_requests: int | None = None,
    result_type: type[R] = LoadRound,
) -> R:
    """Load from `connections` forked client processes until `seconds` pass or `max_requests` are sent.

    path is fixed, or a module-level function of the request number (process i numbers its
    requests from i * 100000 + 1). With max_requests the total is exact: the processes split it
    and the last takes the remainder. Only 200 responses count as requests."""
    counts = [10**9] * connections
    if max_requests is not None:
        per_process = -(-max_requests // connections)
        counts = [per_process] * connections
        counts[-1] = max_requests - per_process * (connections - 1)
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(connections) as pool:
        results = pool.map(
            _python_client, [(port, seconds, count, path, i * 100_000) for i, count in enumerate(counts)]
        )
    elapsed = time.perf_counter() - started
    latencies = sorted(value for values, _ in results for value in values)
    return result_type(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        failures=sum(failures for _, failures in results),
    )


def interleaved_configs(
    servers: dict[str, GunicornRole],
    *,
    cases: list[tuple[str, str]],
    load: Callable[[str, str, float], R],
    rounds: int,
    seconds: float,
    warmup_seconds: float,
    progress: Callable[[int, str, str, R], str],
) -> dict[tuple[str, str], list[R]]:
    """Many servers and paths: each round loads every (server name, path) case once for `seconds`,
    starting one case further along each round, so drift on a shared machine spreads over all of
    them. Each case is warmed up first. Returns the rounds per case, in order. BenchError on any
    failed request."""
    for server in servers.values():
        server.wait_ready()
    for name, path in cases:
        load(name, path, warmup_seconds)
    results: dict[tuple[str, str], list[R]] = {case: [] for case in cases}
    for index in range(rounds):
        shift = index % len(cases)
        for name, path in cases[shift:] + cases[:shift]:
            result = load(name, path, seconds)
            if result.failures:
                raise BenchError(f"{result.failures} failed request(s) on {name} {path} (round {index + 1})")
            results[(name, path)].append(result)
            print(progress(index + 1, name, path, result), file=sys.stderr, flush=True)
    return results


def interleaved_rounds(
    servers: dict[bool, GunicornRole],
    *,
    load: Callable[[GunicornRole, float], R],
    rounds: int,
    seconds: float,
    warmup_seconds: float,
    progress: str,
    failure: str,
) -> dict[bool, list[R]]:
    """Tracking on against off: wait for both servers, warm each up, then `rounds` rounds of `seconds`
    per mode, alternating which mode goes first (on,off / off,on ...) so slow drift on a shared
    machine hits both alike. Returns the rounds per mode (tracking True/False), in order.

    After each round prints `progress` on stderr; a round with any failed request raises
    BenchError(`failure`). Both are str.format templates with {round} (1-based), {mode} and {result}.
    """
    for server in servers.values():
        server.wait_ready()
    for server in servers.values():
        load(server, warmup_seconds)
    results: dict[bool, list[R]] = {True: [], False: []}
    for index in range(rounds):
        order = (True, False) if index % 2 == 0 else (False, True)
        for tracking in order:
            result = load(servers[tracking], seconds)
            fields = {"round": index + 1, "mode": mode(tracking), "result": result}
            if result.failures:
                raise BenchError(failure.format(**fields))
            results[tracking].append(result)
            print(progress.format(**fields), file=sys.stderr, flush=True)
    return results
