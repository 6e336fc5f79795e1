"""Real processes for tests: a private redis-server, gunicorn roles, waiting for ports."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from system.processes import REPO, free_port, start_gunicorn, start_redis, stop_process_group, wait_for_port


def suite_database_url() -> str:
    """The URL of this run's (under xdist: this worker's) test database, for processes the tests start."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def http_get(url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http only, loopback)
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextlib.contextmanager
def private_redis():
    """A redis-server of our own on a spare port (never the machine's shared one)."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="es-redis-")
    process = start_redis(port=port, workdir=workdir)
    try:
        wait_for_port(port, process=process)
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _test_key_prefix() -> str:
    """The running test's own cache key prefix (conftest.isolated_cache): the roles one test starts
    share their keys, tests never do, and the test's teardown deletes them."""
    from django.conf import settings

    return settings.CACHES["default"]["KEY_PREFIX"]


@contextlib.contextmanager
def gunicorn(*, env: dict[str, str], role: str = "web", workers: int = 2):
    """Start a gunicorn role exactly as the Procfile does, on a free loopback port."""
    port = free_port()
    metrics_dir = tempfile.mkdtemp(prefix="es-prom-")
    run_dir = tempfile.mkdtemp(prefix="es-run-")  # the embedded cache file: never the checkout's
    full_env = {
        "RUN_DIR": run_dir,
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        # Both ports: a web test's settings may reach for the limiter's, and the other way round.
        "WEB_PORT": str(port),
        "LIMITER_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "DJANGO_SECRET_KEY": "test-only",
        "CACHE_KEY_PREFIX": _test_key_prefix(),
        **env,
    }
    process = start_gunicorn(role=role, port=port, env=full_env, workers=workers, stdout=subprocess.PIPE)
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_process_group(process, timeout=15)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}, **env}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120
    )


@contextlib.contextmanager
def redis_cluster(*, nodes: int = 3):
    """A real Redis Cluster of `nodes` primaries (no replicas) on spare loopback ports, in temp dirs.

    Yields the seed URL (any node: the client discovers the rest). Every node is killed at the end.
    """
    ports = [free_port() for _ in range(nodes)]
    bus_ports = [free_port() for _ in range(nodes)]  # else port + 10000, possibly past 65535
    workdirs = [tempfile.mkdtemp(prefix="es-redis-cluster-") for _ in ports]
    processes = []
    try:
        for port, bus_port, workdir in zip(ports, bus_ports, workdirs, strict=True):
            options = ["--cluster-enabled", "yes", "--cluster-port", str(bus_port)]
            options += ["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
            processes.append(start_redis(port=port, workdir=workdir, options=options))
        for port, process in zip(ports, processes, strict=True):
            wait_for_port(port, process=process)
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        _wait_for_cluster_ok(ports)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_cluster_ok(ports: list[int], *, timeout: float = 30.0) -> None:
    """Until every node reports cluster_state:ok (all slots assigned and agreed on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [
            subprocess.run(
                ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=10
            ).stdout
            for port in ports
        ]
        if all("cluster_state:ok" in state for state in states):
            return
        time.sleep(0.1)
    raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")


def drain_process(*, env: dict[str, str]) -> subprocess.Popen:
    """Start tracker.tests.drain_process (drains until the buffer is empty) with this environment.

    Its output goes to a temporary file (process.output; a pipe nobody reads could fill and block it)."""
    full_env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"}},
        "DJANGO_SECRET_KEY": "test-only",
        **env,
    }
    output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed with the test's process list)
    process = subprocess.Popen(
        [sys.executable, "-m", "tracker.tests.drain_process"],
        cwd=REPO,
        env=full_env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    process.output = output  # type: ignore[attr-defined]
    return process
