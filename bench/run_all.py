"""make bench: run every bench/bench_*.py in turn against the real services and print their reports.

Each benchmark is a standalone script that prints a Markdown section; compare figures as ratios
within one run (the machines are shared and noisy). Pass names to run a subset:
    .venv/bin/python bench/run_all.py web drain
"""

import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {memory()}, Python {platform.python_version()}, "
        f"{service_versions()}"
    )


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB RAM"
    except (OSError, ValueError):
        pass
    return "unknown RAM"


def service_versions() -> str:
    """PostgreSQL and Redis versions of the services the benchmarks use (DATABASE_URL, REDIS_URL)."""
    import os

    versions = []
    try:
        import psycopg2

        with psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=3) as conn, conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            versions.append(f"PostgreSQL {cursor.fetchone()[0].split()[0]}")
        conn.close()
    except Exception as error:  # noqa: BLE001 - the header is informative; the benchmarks report real failures
        versions.append(f"PostgreSQL unknown ({type(error).__name__})")
    try:
        import redis

        versions.append(f"Redis {redis.Redis.from_url(os.environ['REDIS_URL']).info('server')['redis_version']}")
    except Exception as error:  # noqa: BLE001
        versions.append(f"Redis unknown ({type(error).__name__})")
    return ", ".join(versions)


def main() -> int:
    wanted = set(sys.argv[1:])
    scripts = sorted(HERE.glob("bench_*.py"))
    if wanted:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    print(f"# Benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\nMachine: {machine()}\n", flush=True)
    failed = []
    for script in scripts:
        print(f"\n<!-- {script.name} -->", flush=True)
        result = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        if result.returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nFailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
