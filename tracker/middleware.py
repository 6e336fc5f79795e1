"""Tracks every request the web role serves: one Redis round trip, no database write.

The event is in Redis (or, when Redis is down, in the database) before the response leaves, so a
worker killed after answering loses nothing. Where the rate limiter decides after a cheap view
(ratelimit.middleware), its one script also appends the event; the request is then marked
(mark_recorded) and not recorded a second time here.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from tracker import services
from tracker.clients import client_ip
from tracker.events import Event
from tracker.hotsettings import snapshot
from tracker.metrics import EVENTS_DROPPED

logger = logging.getLogger(__name__)

# Request attributes: when tracking started (perf_counter), and "the event is already buffered".
_STARTED = "_tracking_started"
_RECORDED = "_tracking_recorded"


class RequestTrackingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        setattr(request, _STARTED, time.perf_counter())
        response = self.get_response(request)
        if getattr(request, _RECORDED, False):
            return response
        event = tracked_event(request, response)
        if event is not None:
            try:
                services.record_events([event])
            except Exception:  # tracking must never turn a served response into an error
                EVENTS_DROPPED.labels(reason="bug").inc()
                logger.exception("Could not record the request to %s", request.path)
        return response


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """What tracking reads per request (tracker.hotsettings)."""

    enabled: bool
    ignore_paths: tuple[str, ...]
    ignore_user_agents: tuple[str, ...]
    user_agent_max_length: int
    pod_name: str


@snapshot
def tracking_settings() -> TrackingSettings:
    return TrackingSettings(
        enabled=settings.TRACKING_ENABLED,
        ignore_paths=tuple(settings.TRACKING_IGNORE_PATHS),
        ignore_user_agents=tuple(settings.TRACKING_IGNORE_USER_AGENTS),
        user_agent_max_length=settings.TRACKING_USER_AGENT_MAX_LENGTH,
        pod_name=settings.POD_NAME,
    )


def is_tracked(request: HttpRequest) -> bool:
    """Tracking is on and the request is not a probe or a scrape (TRACKING_IGNORE_* settings)."""
    config = tracking_settings()
    if not config.enabled or request.path.startswith(config.ignore_paths):
        return False
    return not request.META.get("HTTP_USER_AGENT", "").startswith(config.ignore_user_agents)


def tracked_event(request: HttpRequest, response: HttpResponse) -> Event | None:
    """The event of a served request (its duration so far), None where it is not tracked."""
    if not is_tracked(request):
        return None
    started = getattr(request, _STARTED, None)
    duration_ms = (time.perf_counter() - started) * 1000.0 if started is not None else None
    return request_event(request, response, duration_ms)


def mark_recorded(request: HttpRequest) -> None:
    """The request's event is already buffered (by the rate limiter's script): do not record it again."""
    setattr(request, _RECORDED, True)


def endpoint_name(request: HttpRequest) -> str:
    """The resolved route ("/items/<int:pk>"), never the raw path, so names stay few."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return settings.TRACKING_UNMATCHED_ENDPOINT
    return "/" + match.route.lstrip("^").rstrip("$")


def request_event(request: HttpRequest, response: HttpResponse, duration_ms: float | None) -> Event:
    config = tracking_settings()
    return Event(
        endpoint=endpoint_name(request)[:200],
        occurred_at=timezone.now(),
        method=request.method[:10] if request.method else "",
        status_code=response.status_code,
        is_error=response.status_code >= 500,
        duration_ms=round(duration_ms, 3) if duration_ms is not None else None,
        client_ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[: config.user_agent_max_length],
        pod_name=config.pod_name,
    )
