"""Rate limiting in the web role: per client, per endpoint (the resolved route), shared by every replica.

Sits right after the tracking middleware, so refused requests are tracked too. The decision is
made in process_view, the first point where the route is known; paths that match no route
are not limited (they reach no view). Every response of a limited endpoint carries the IETF
RateLimit-Policy / RateLimit fields (draft-ietf-httpapi-ratelimit-headers-11) and the common
X-RateLimit-Limit / -Remaining / -Reset (Reset: Unix time in seconds, as GitHub's).

Deciding after the view: a view whose class sets `rate_limit_after_view = True` (read-only and cheap:
the greeting and /stats, served from the process's cache) runs first on GET and HEAD; its response is
then counted, decided and tracked by one Redis script, so a tracked request costs one round trip
instead of two. A refused request still gets its 429 (the view's response is discarded), at the price
of having run a cheap view; the same script buffers the 429's event and counts the refusal, so a
refusal costs one round trip too (three before: the script, the 429's XADD, the refusal counter).
Elsewhere (other views, other methods, tracking off, Redis Cluster, the embedded default) the
decision comes first, in process_view.
"""

import math
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from ratelimit import services
from ratelimit.services import Decision
from tracker.clients import client_ip
from tracker.hotsettings import snapshot
from tracker.middleware import endpoint_name, is_tracked, mark_recorded, tracked_event

SAFE_METHODS = ("GET", "HEAD")


class RateLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if getattr(request, "ratelimit_after_view", False):
            response = decide_after_view(request, response)
        decision = getattr(request, "ratelimit_decision", None)
        # Shadow mode is a dry run: responses stay exactly as without limits. After a Redis
        # failure the counts are unknown, so nothing is advertised.
        if decision is not None and decision.usages and not decision.shadow:
            add_headers(response, decision)
        return response

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        exempt = exempt_paths()
        if exempt is None or request.path.startswith(exempt):
            return None
        if may_decide_after_view(request, view_func):
            request.ratelimit_after_view = True  # type: ignore[attr-defined]  # read back in __call__
            return None
        decision = services.check_rate(endpoint=endpoint_name(request), client_ip=client_ip(request))
        request.ratelimit_decision = decision  # type: ignore[attr-defined]  # read back in __call__
        return refusal(decision)


@snapshot
def exempt_paths() -> tuple[str, ...] | None:
    """Path prefixes the web role does not limit (RATELIMIT_EXEMPT_PATHS); None in other roles, where this
    middleware limits nothing (the limiter's /check decides for its callers)."""
    return tuple(settings.RATELIMIT_EXEMPT_PATHS) if settings.ROLE == "web" else None


def may_decide_after_view(request: HttpRequest, view_func: Callable[..., Any]) -> bool:
    """A cheap read-only view whose tracked event one script can count and buffer (see the module
    docstring); an untracked request gains nothing from waiting, so it is decided first."""
    view_class = getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)
    return (
        request.method in SAFE_METHODS
        and getattr(view_class, "rate_limit_after_view", False)
        and is_tracked(request)
        and services.can_buffer_with_count()
    )


def decide_after_view(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Count, decide and buffer the request's event in one round trip; the view's response, or the
    refusal that replaces it (the script buffered the 429's event instead, and counted the refusal)."""
    event = tracked_event(request, response)
    decision = services.check_rate(
        endpoint=endpoint_name(request), client_ip=client_ip(request), event=event.to_json() if event else None
    )
    request.ratelimit_decision = decision  # type: ignore[attr-defined]  # read back in __call__
    if decision.event_buffered:
        mark_recorded(request)
    return refusal(decision) or response


def refusal(decision: Decision) -> JsonResponse | None:
    """The response that refuses the request, None if it may proceed."""
    if decision.outcome == services.LIMITED:
        return too_many_requests(decision)
    if not decision.allowed:  # Redis unreachable and RATELIMIT_FAIL_OPEN=false
        return unavailable()
    return None


def too_many_requests(decision: Decision) -> JsonResponse:
    usage = decision.binding
    assert usage is not None  # a refusal always has a counter over its limit
    window = f"{usage.window_seconds} seconds" if usage.window_seconds != 1 else "second"
    response = JsonResponse(
        {
            "error": "Rate limit exceeded",
            "message": (
                f"Too many requests to {decision.endpoint}: at most {usage.limit} per {window}. "
                f"Retry after {decision.retry_after} seconds."
            ),
        },
        status=429,
    )
    response["Retry-After"] = str(decision.retry_after)
    return response


def unavailable() -> JsonResponse:
    response = JsonResponse(
        {
            "error": "Rate limiting unavailable",
            "message": "Requests cannot be counted right now, so they are refused. Retry in a moment.",
        },
        status=503,
    )
    response["Retry-After"] = str(math.ceil(services.REDIS_RETRY_AFTER_SECONDS))
    return response


def add_headers(response: HttpResponse, decision: Decision) -> None:
    """IETF draft-11 fields (one item per policy) and the X-RateLimit-* fields of the binding counter."""
    response["RateLimit-Policy"] = decision.rule.policy_header
    response["RateLimit"] = ", ".join(
        f'"{usage.policy}";r={usage.remaining};t={usage.reset_after}' for usage in decision.usages
    )
    binding = decision.binding
    assert binding is not None  # called only for a decision with usages
    response["X-RateLimit-Limit"] = str(binding.limit)
    response["X-RateLimit-Remaining"] = str(binding.remaining)
    response["X-RateLimit-Reset"] = str(int(time.time()) + binding.reset_after)
