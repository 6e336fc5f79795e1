"""Gunicorn settings shared by the web and limiter roles.

Each role has a two-line config module (gunicorn_web, gunicorn_limiter) so that the
Procfile and the Kubernetes manifests run the very same command.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker


from endpointstats import logs, paths


def configure(*, role: str, port_variable: str, default_port: int) -> dict:
    """Return gunicorn settings for a role; sets ROLE and the Prometheus directory first.

    Runs in the gunicorn master before the app is imported, so environment set here
    is what Django and prometheus_client see in every worker.
    """
    os.environ["ROLE"] = role
    # Several workers share one metrics directory (prometheus_client multiprocess mode).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(paths.prometheus_dir(role=role))
    host = os.environ.get("BIND_HOST", "127.0.0.1")
    port = os.environ.get(port_variable, str(default_port))
    settings = {
        "bind": f"{host}:{port}",
        "workers": int(os.environ.get("WEB_CONCURRENCY", "2")),
        # Threads (gthread) when GUNICORN_THREADS > 1: a client that sends its request slowly ties up one
        # thread, not a whole worker (docs/RELIABILITY.md, slow clients).
        "threads": int(os.environ.get("GUNICORN_THREADS", "1")),
        "wsgi_app": "endpointstats.wsgi:application",
        "accesslog": "-" if os.environ.get("GUNICORN_ACCESS_LOG", "") == "true" else None,
        "graceful_timeout": int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20")),
        "timeout": int(os.environ.get("GUNICORN_TIMEOUT", "30")),
        "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        "proc_name": f"endpointstats-{role}",
        # gunicorn's control socket lives in $HOME: read-only in the cluster, shared by both roles here.
        "control_socket_disable": True,
        # The request id (endpointstats.logs) ties an access line to the app's lines of the request.
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(D)sus request_id=%({x-request-id}o)s',
    }
    logconfig = logs.gunicorn_logconfig()  # JSON lines when LOG_FORMAT=json
    if logconfig:
        settings["logconfig_dict"] = logconfig
    return settings


def on_starting(server: Arbiter) -> None:
    """Wipe metrics left by a previous run: stale files would add old counts to new ones."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def child_exit(server: Arbiter, worker: Worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Worker) -> None:
    """The web role says once per start, loudly if so, what a Redis crash would lose (tracker.health)."""
    if os.environ.get("ROLE") == "web" and worker.age == 1:
        from django.conf import settings

        # bench/floor.py runs under this config with a settings module that has no Redis at all.
        if getattr(settings, "REDIS_URL", ""):
            from tracker import health

            health.log_redis_persistence()
