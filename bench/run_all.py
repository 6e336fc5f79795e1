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

    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


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
