"""The published OpenAPI schemas tell the truth: schemathesis against both live HTTP roles.

Each role runs under a real gunicorn (as the Procfile starts it) on a free port and serves its own
schema at /api/schema/. Schemathesis generates requests from it (valid ones and invalid ones) and
checks every answer: no 5xx, every status code documented, every body and content type as
documented, and every valid request accepted. Bounded by SCHEMATHESIS_MAX_EXAMPLES per operation.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from analytics.services import tokens
from system.processes import REPO
from tracker.tests.processes import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)  # the servers must see the committed token

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
    ]
)
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261129")  # fixed: a failure reproduces; change it to explore


def server_env(**extra: str) -> dict[str, str]:
    db = settings.DATABASES["default"]
    return {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        **extra,
    }


def run_schemathesis(url: str, token: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{url}/api/schema/",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            "--header",
            f"Authorization: Bearer {token}",
            "--generation-allow-x00",
            "false",  # DRF refuses NUL in every text field, as the 400 says
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory
        env={**os.environ, "PYTHONPATH": str(REPO), "SCHEMATHESIS_HOOKS": "endpointstats.tests.schemathesis_hooks"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_web_roles_schema_tells_the_truth(tmp_path):
    _, token = tokens.create_token(name="schemathesis")
    env = server_env(
        RATELIMIT_SHADOW="true",  # limits count but never refuse: the API is under test, not the limits
        ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN="1000000",  # every generated name is new
    )
    with gunicorn(env=env, role="web", workers=2) as (url, _):
        result = run_schemathesis(url, token, tmp_path)

    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


def test_the_limiter_roles_schema_tells_the_truth(tmp_path):
    token = "test-limiter-token-for-schemathesis"
    with gunicorn(env=server_env(LIMITER_TOKEN=token), role="limiter", workers=2) as (url, _):
        result = run_schemathesis(url, token, tmp_path)

    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
