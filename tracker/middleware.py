"""Tracks every request the web role serves: one Redis round trip, no database write."""

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from tracker import services
from tracker.clients import client_ip
from tracker.events import Event
from tracker.metrics import EVENTS_DROPPED

logger = logging.getLogger(__name__)


class RequestTrackingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:

        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        if settings.TRACKING_ENABLED and is_tracked(request):
            duration_ms = (time.perf_counter() - started) * 1000.0
            try:
                services.record_events([request_event(request, response, duration_ms)])
            except Exception:  # tracking must never turn a served response into an error
                EVENTS_DROPPED.labels(reason="bug").inc()
                logger.exception("Could not record the request to %s", request.path)
        return response


def is_tracked(request: HttpRequest) -> bool:
    """Probes and scrapes are served but not tracked (TRACKING_IGNORE_* settings)."""
    if request.path.startswith(tuple(settings.TRACKING_IGNORE_PATHS)):
        return False
    user_agent = request.META.get("HTTP_USER_AGENT", "")
    return not user_agent.startswith(tuple(settings.TRACKING_IGNORE_USER_AGENTS))


def endpoint_name(request: HttpRequest) -> str:
    """The resolved route ("/items/<int:pk>"), never the raw path, so names stay few."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return settings.TRACKING_UNMATCHED_ENDPOINT
    return "/" + match.route.lstrip("^").rstrip("$")


def request_event(request: HttpRequest, response: HttpResponse, duration_ms: float) -> Event:
    return Event(
        endpoint=endpoint_name(request)[:200],
        occurred_at=timezone.now(),
        method=request.method[:10] if request.method else "",
        status_code=response.status_code,
        is_error=response.status_code >= 500,
        duration_ms=round(duration_ms, 3),
        client_ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[: settings.TRACKING_USER_AGENT_MAX_LENGTH],
        pod_name=settings.POD_NAME,
    )
