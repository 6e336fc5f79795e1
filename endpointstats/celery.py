"""The Celery app shared by the worker and beat roles (canonical Django wiring).

Also the process wiring the cluster needs from those two roles:
- a heartbeat file, touched every few seconds, whose age the liveness and readiness probes
  check (deploy/kustomize/base: worker and beat). It costs one utime() per interval and no
  broker round trip, so a broker blip never restart-loops a healthy worker: the broker
  connection has its own retries and heartbeats.
- the worker's own /metrics (drain lag, drain batches, backups: they are observed in the
  worker's pool processes), served only when WORKER_METRICS_PORT is set.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery, bootsteps
from celery.signals import beat_init, celeryd_init, worker_init, worker_process_shutdown, worker_ready

from endpointstats import paths

if TYPE_CHECKING:  # types only: the web roles import this module too, never the worker's machinery
    from celery.beat import Service
    from celery.worker import WorkController

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")
# `celery ... worker` / `celery ... beat` under make run set no ROLE: name it for the logs.
for _role in ("worker", "beat"):
    if _role in sys.argv[1:]:
        os.environ.setdefault("ROLE", _role)
        break
if os.environ.get("ROLE") == "beat":
    # beat opens its schedule file while it starts, before any of its signals is sent, and fails
    # when the file's folder (RUN_DIR by default) does not exist yet: create it here.
    paths.beat_schedule_file().parent.mkdir(parents=True, exist_ok=True)

app = Celery("endpointstats")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def heartbeat_path(*, role: str) -> Path:
    """Where the role's heartbeat lives: CELERY_HEARTBEAT_FILE, else one file per role in RUN_DIR."""
    return paths.heartbeat_file(role=role)


class Heartbeat:
    """Touches a file right away and then every `interval` seconds until stopped.

    A daemon thread, so it never keeps a stopping process alive; stop() removes the file,
    so a probe never mistakes a cleanly stopped process for a live one.
    """

    def __init__(self, *, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()  # sets the mtime to now, also when the file exists

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            # A full or vanished /tmp: keep trying; the probe notices the stale file meanwhile.
            with contextlib.suppress(OSError):
                self.beat()


def _heartbeat_interval() -> float:
    return float(os.environ.get("CELERY_HEARTBEAT_INTERVAL_SECONDS", "5"))


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Worker blueprint step: beats from the moment the pool is up until the worker stops."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: WorkController, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.heartbeat = Heartbeat(path=heartbeat_path(role="worker"), interval=_heartbeat_interval())

    def start(self, worker: WorkController) -> None:
        self.heartbeat.start()

    def stop(self, worker: WorkController) -> None:
        self.heartbeat.stop()

    def shutdown(self, worker: WorkController) -> None:
        self.heartbeat.stop()


app.steps["worker"].add(WorkerHeartbeat)


@beat_init.connect
def start_beat_heartbeat(sender: Service | None = None, **kwargs: Any) -> None:
    heartbeat = Heartbeat(path=heartbeat_path(role="beat"), interval=_heartbeat_interval())
    heartbeat.start()
    atexit.register(heartbeat.stop)


@celeryd_init.connect
def wipe_worker_metrics(**kwargs: Any) -> None:
    """Stale files from a previous container in the same pod would add old counts to new ones."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.environ.get("WORKER_METRICS_PORT"):
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)


@worker_init.connect
def serve_worker_metrics(**kwargs: Any) -> None:
    """Serve every pool process's metrics on WORKER_METRICS_PORT (before the pool forks)."""
    port = os.environ.get("WORKER_METRICS_PORT")
    if not port or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(int(port), addr=os.environ.get("BIND_HOST", "127.0.0.1"), registry=registry)


@worker_process_shutdown.connect
def forget_dead_pool_process(pid: int | None = None, **kwargs: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@worker_ready.connect
def log_redis_persistence(**kwargs: Any) -> None:
    """The worker drains the buffer: it says at start, loudly if so, what a Redis crash would lose."""
    from django.conf import settings

    if settings.REDIS_URL:
        from tracker import health

        health.log_redis_persistence()
