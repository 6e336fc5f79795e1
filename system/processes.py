"""Processes on loopback, shared by the tests, the benchmarks and the system suites: a free port,
waiting for one, stopping a process group, and starting a gunicorn role as the Procfile does."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent


# Ports come from below Linux's ephemeral range (32768-60999), which the kernel hands to every
# outgoing connection and to bind(0): a port picked there and freed can be taken by another
# connection before our server binds it. Under pytest-xdist each worker draws from its own slice,
# so two workers of one test run never pick the same port.
PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1), from this xdist worker's slice of PORT_RANGE."""
    low, high = PORT_RANGE
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = (high - low) // max(workers, 1)
    start = low + index * size
    for port in random.sample(range(start, start + size), k=min(size, 200)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{start + size}")


def wait_for_port(port: int, *, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once 127.0.0.1:port accepts connections; RuntimeError if `process` exits first,
    TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop_process_group(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM a process started with start_new_session=True and its children; SIGKILL after timeout."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_gunicorn(
    *, role: str, port: int, env: Mapping[str, str], workers: int = 2, stdout: IO[str] | int | None = None
) -> subprocess.Popen[bytes]:
    """Start a gunicorn role ("web" or "limiter") with its config module, as the Procfile does, on
    127.0.0.1:port, in a process group of its own (stop it with stop_process_group). `env` is the
    whole environment but the bind address, port and worker count, which this sets."""
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", f"python:endpointstats.gunicorn_{role}"],
        cwd=REPO,
        env={
            **env,
            "BIND_HOST": "127.0.0.1",
            f"{role.upper()}_PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
        },
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_redis(
    *, port: int, workdir: str, options: Sequence[str] = (), prefix: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start a redis-server of our own on 127.0.0.1:port without persistence (never the machine's
    shared one), its files in `workdir`; `options` are more redis-server flags, `prefix` a command
    to run it under (e.g. nice). Wait for it with wait_for_port; kill it when done."""
    return subprocess.Popen(
        [
            *prefix,
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *options,
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
