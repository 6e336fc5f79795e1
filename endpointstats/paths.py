"""Where a running copy of the product writes its files (no Django import: gunicorn configs use it).

Every default lives under one run folder, RUN_DIR, which is `.run/` in the checkout, so two
checkouts on one host never share metrics, schedules or heartbeats. Each path has its own
variable too (the Kubernetes manifests set them to the pod's volumes).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def run_dir() -> Path:
    """RUN_DIR, else `.run/` in this checkout."""
    return Path(os.environ.get("RUN_DIR") or BASE_DIR / ".run")


def prometheus_dir(*, role: str) -> Path:
    """PROMETHEUS_MULTIPROC_DIR, else `<RUN_DIR>/prometheus-<role>` (one folder per role: gunicorn wipes it)."""
    return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or run_dir() / f"prometheus-{role}")


def heartbeat_file(*, role: str) -> Path:
    """CELERY_HEARTBEAT_FILE, else `<RUN_DIR>/<role>.heartbeat`."""
    return Path(os.environ.get("CELERY_HEARTBEAT_FILE") or run_dir() / f"{role}.heartbeat")


def beat_schedule_file() -> Path:
    """CELERY_BEAT_SCHEDULE_FILE, else `<RUN_DIR>/celerybeat-schedule` (beat's own bookkeeping)."""
    return Path(os.environ.get("CELERY_BEAT_SCHEDULE_FILE") or run_dir() / "celerybeat-schedule")
