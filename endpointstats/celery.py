"""The Celery app shared by the worker and beat roles (canonical Django wiring)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "endpointstats.settings")

app = Celery("endpointstats")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
