"""The contract tests (marked `contract`: a tracked request counted once, /stats, storing events,
aggregation, the analytics reads, rate-limit counting) run in this suite on PostgreSQL + Redis, and
here again on the embedded backend: SQLite database and SQLite cache, as `make run` without PostgreSQL
and Redis. pytest-django has one DATABASES per run and the app chooses its fallbacks by the
connection's vendor, so the embedded run is a pytest run of its own on the same test code."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from tracker.tests.processes import REPO


def test_the_contract_tests_pass_on_the_embedded_sqlite_backend_too(request, tmp_path):
    # Under `make test --cov` the embedded run is measured too: its data file (.coverage.<suffix>
    # beside .coverage) is combined into the report with the workers' own.
    measured = ["-m", "coverage", "run", "--parallel-mode"] if request.config.getoption("cov_source", None) else []
    junit = tmp_path / "embedded.xml"
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"} and not k.startswith(("PYTEST_", "COV_"))
        },
        "ES_TEST_BACKEND": "sqlite",
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "CACHE_SQLITE_PATH": str(tmp_path / "cache.sqlite3"),
        "RUN_DIR": str(tmp_path / "run"),
    }
    result = subprocess.run(
        [sys.executable, *measured, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:cov", "-q",
         f"--junitxml={junit}", "tracker", "ratelimit", "analytics", "console"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    cases = list(ET.parse(junit).getroot().iter("testcase"))  # noqa: S314 (our own JUnit file)
    not_passed = [f"{case.get('classname')}::{case.get('name')}" for case in cases if list(case)]
    assert not not_passed, not_passed  # failed, errored or skipped on SQLite
    assert len(cases) >= 19, result.stdout[-2000:]  # every test marked contract (less its Redis Cluster variants)
