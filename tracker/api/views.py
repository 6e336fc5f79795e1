"""The public API of the web role: thin views over tracker.queries and tracker.health."""

import socket

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tracker import health, queries
from tracker.api.renderers import FastJSONRenderer, JSONOnlyNegotiation, json_response
from tracker.api.serializers import HealthOutput, StatsOutput, WelcomeOutput


class HotPublicView(APIView):
    """A public, read-only hot path: plain dicts rendered by orjson into a finished response (the
    serializers only describe them in the schema), no authentication, served from the process's
    cache. Errors still go through DRF (its exception handler, rendered by FastJSONRenderer)."""

    renderer_classes = [FastJSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation
    # Read-only and served from the process's cache: the rate limiter may decide after it has run,
    # counting and tracking the request in one Redis round trip (ratelimit.middleware).
    rate_limit_after_view = True

    def perform_authentication(self, request: Request) -> None:
        # Public: nothing reads request.user. DRF's documented way to make authentication lazy; eager,
        # it costs ~5 µs a request even with no authentication classes (docs/PERFORMANCE.md).
        pass


class WelcomeView(HotPublicView):
    """GET / : a greeting from the pod that served it."""

    @extend_schema(responses=WelcomeOutput)
    def get(self, request: Request) -> HttpResponse:
        message, from_cache = queries.welcome_message()
        return json_response(
            {"message": message, "pod": settings.POD_NAME, "timestamp": timezone.now(), "from_cache": from_cache}
        )


class StatsView(HotPublicView):
    """GET /stats : per-endpoint counters, from the cache when warm (cached rows are JSON-ready dicts)."""

    @extend_schema(responses=StatsOutput)
    def get(self, request: Request) -> HttpResponse:
        rows, from_cache = queries.endpoint_stats()
        return json_response({"endpoints": rows, "from_cache": from_cache})


class HealthView(APIView):
    """GET /health and /health/ready : 200 when the database and Redis answer, else 503.

    /health/ready ignores a Redis outage: the web role keeps serving (events go straight
    to the database), so taking every pod out of the Service would turn a degraded
    Redis into a full outage.
    """

    readiness = False

    @extend_schema(responses={200: HealthOutput, 503: HealthOutput})
    def get(self, request: Request) -> Response:
        database, redis = health.database_status(), health.redis_status()
        healthy = database == "up" and (self.readiness or redis != "down")
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "database": database,
            "redis": redis,
            # Not part of the status: a Redis without persistence works, it only risks the buffer on a crash.
            "redis_persistence": health.redis_persistence() if redis == "up" else redis,
            "hostname": socket.gethostname(),
            "timestamp": timezone.now(),
        }
        return Response(HealthOutput(body).data, status=200 if healthy else 503)


class HealthLiveView(APIView):
    """GET /health/live : the process answers (no dependency checked)."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response({"status": "alive", "hostname": socket.gethostname()})
