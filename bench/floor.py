"""The framework floor of bench_web: Django + DRF serving the web role's JSON with nothing else.

A settings module, URLconf and views in one file: `DJANGO_SETTINGS_MODULE=bench.floor` under the
web role's gunicorn config (same workers, same WSGI entry point). No middleware, no database, no
Redis: `GET /` answers the greeting's fields and `GET /stats` the body the web role's `/stats`
gave (read once from BENCH_FLOOR_STATS_FILE), both rendered by DRF's JSONRenderer on every request,
so the difference to the web role is what tracking, limiting, metrics, caching and middleware cost.
"""

import json
import os

from django.urls import path
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

SECRET_KEY = "bench-floor-only"  # noqa: S105 - never serves anything but the benchmark
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
# DRF imports the auth models; nothing here uses them (no database).
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.floor"
DATABASES: dict = {}
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
POD_NAME = os.environ.get("POD_NAME", "bench-web")
_STATS_FILE = os.environ.get("BENCH_FLOOR_STATS_FILE", "")
_STATS = json.loads(open(_STATS_FILE).read())["endpoints"] if _STATS_FILE else []  # noqa: SIM115


class WelcomeView(APIView):
    def get(self, request: Request) -> Response:
        return Response(
            {
                "message": "Welcome to the API Access Tracker",
                "pod": POD_NAME,
                "timestamp": timezone.now(),
                "from_cache": True,
            }
        )


class StatsView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"endpoints": _STATS, "from_cache": True})


class LiveView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"status": "alive"})


urlpatterns = [
    path("", WelcomeView.as_view()),
    path("stats", StatsView.as_view()),
    path("health/live", LiveView.as_view()),
]
