"""The worker and beat heartbeat, for real: a Celery worker and a beat against a private Redis touch
the file the probes read; the probe command of the manifests passes while they run and fails after."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from deploy.tests import k8s
from system.processes import free_port, stop_process_group
from tracker.tests.processes import http_get, private_redis

CELERY = str(Path(sys.executable).parent / "celery")


def probe_command(rendered, role: str, heartbeat: Path) -> list[str]:
    """The liveness probe of the role's manifest, pointed at this test's heartbeat file."""
    (container,) = k8s.one(rendered["minikube"], "Deployment", role)["spec"]["template"]["spec"]["containers"]
    command = container["livenessProbe"]["exec"]["command"]
    path = k8s.env_value(container, "CELERY_HEARTBEAT_FILE")
    return [part.replace(path, str(heartbeat)) for part in command]


def wait_for(condition, *, timeout: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"celery exited with {process.returncode} before {what}:\n{output}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [CELERY, "--app", "endpointstats", *args],
        cwd=k8s.REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    stop_process_group(process, timeout=30)


@pytest.fixture
def celery_env():
    with private_redis() as (port, _), tempfile.TemporaryDirectory(prefix="es-heartbeat-") as workdir:
        env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"}},
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "DJANGO_SECRET_KEY": "test-only",
            "CELERY_HEARTBEAT_INTERVAL_SECONDS": "1",
        }
        yield env, Path(workdir)


def test_the_worker_heartbeat_feeds_the_probe_and_the_worker_serves_its_metrics(rendered, celery_env):
    env, workdir = celery_env
    heartbeat = workdir / "worker.heartbeat"
    metrics_dir = workdir / "prometheus"
    metrics_dir.mkdir()
    metrics_port = free_port()
    env = {
        **env,
        "CELERY_HEARTBEAT_FILE": str(heartbeat),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WORKER_METRICS_PORT": str(metrics_port),
        "BIND_HOST": "127.0.0.1",
    }
    probe = probe_command(rendered, "worker", heartbeat)
    worker = start(
        ["worker", "--loglevel", "INFO", "--concurrency", "1", "--hostname", f"probe-{os.getpid()}@test"], env
    )
    try:
        wait_for(heartbeat.exists, timeout=60, what="the heartbeat file", process=worker)
        first = heartbeat.stat().st_mtime
        wait_for(lambda: heartbeat.stat().st_mtime > first, timeout=10, what="a second beat", process=worker)
        assert subprocess.run(probe, timeout=10).returncode == 0
        # The worker's own /metrics (what Prometheus scrapes on the annotated port) answers.
        status, _ = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
    finally:
        stop(worker)
    assert worker.returncode == 0
    assert not heartbeat.exists(), "a cleanly stopped worker removes its heartbeat"
    assert subprocess.run(probe, timeout=10, capture_output=True).returncode != 0


def test_a_stale_heartbeat_fails_the_probe(rendered, tmp_path):
    heartbeat = tmp_path / "stale.heartbeat"
    heartbeat.touch()
    probe = probe_command(rendered, "worker", heartbeat)
    assert subprocess.run(probe, timeout=10).returncode == 0
    old = time.time() - 600
    os.utime(heartbeat, (old, old))
    assert subprocess.run(probe, timeout=10, capture_output=True).returncode != 0


def test_the_beat_heartbeat_feeds_the_probe(rendered, celery_env):
    env, workdir = celery_env
    heartbeat = workdir / "beat.heartbeat"
    env = {**env, "CELERY_HEARTBEAT_FILE": str(heartbeat)}
    probe = probe_command(rendered, "beat", heartbeat)
    beat = start(["beat", "--loglevel", "INFO", "--schedule", str(workdir / "celerybeat-schedule")], env)
    try:
        wait_for(heartbeat.exists, timeout=60, what="the heartbeat file", process=beat)
        first = heartbeat.stat().st_mtime
        wait_for(lambda: heartbeat.stat().st_mtime > first, timeout=10, what="a second beat", process=beat)
        assert subprocess.run(probe, timeout=10).returncode == 0
    finally:
        stop(beat)
