"""The framework floor of bench_web: Django + DRF serving the web role's JSON with nothing else.

A settings module, URLconf and views in one file: `DJANGO_SETTINGS_MODULE=bench.floor` under the
web role's gunicorn config (same workers, same WSGI entry point). No middleware, no database, no
Redis: `GET /` answers the greeting's fields and `GET /stats` the body the web role's `/stats`
gave (read once from BENCH_FLOOR_STATS_FILE), both rendered by DRF's JSONRenderer on every request,
so the difference to the web role is what tracking, limiting, metrics, caching and middleware cost.

With BENCH_FLOOR_REDIS_URL set, every request also makes one bare Redis round trip (a `PING` on a
connection the process keeps, as the web role keeps its own): the least any design pays that puts
each request's event in Redis before the response, so the web role can be compared against it.
"""

import json
import os

from django.urls import path
from django.utils import timezone
from redis.connection import Connection
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
_REDIS_URL = os.environ.get("BENCH_FLOOR_REDIS_URL", "")
_redis: Connection | None = None


def round_trip() -> None:
    """One bare Redis round trip, where BENCH_FLOOR_REDIS_URL asks for it (connected on first use, in the worker)."""
    global _redis
    if not _REDIS_URL:
        return
    if _redis is None:
        from redis import Redis

        pool = Redis.from_url(_REDIS_URL).connection_pool
        _redis = pool.connection_class(**pool.connection_kwargs)
    _redis.send_command("PING")
    _redis.read_response()


class WelcomeView(APIView):
    def get(self, request: Request) -> Response:
        round_trip()
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
        round_trip()
        return Response({"endpoints": _STATS, "from_cache": True})


class LiveView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"status": "alive"})


urlpatterns = [
    path("", WelcomeView.as_view()),
    path("stats", StatsView.as_view()),
    path("health/live", LiveView.as_view()),
]
