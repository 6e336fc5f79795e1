"""Middleware wiring: the admin's own middleware stack, and cheap Prometheus request metrics."""

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from endpointstats.requestmetrics import observe_request

GetResponse = Callable[[HttpRequest], HttpResponse]


class AdminMiddleware:
    """Runs ADMIN_MIDDLEWARE (sessions, CSRF, auth, messages) for ADMIN_PATHS only.

    Only the admin needs them; the API (DRF views: no sessions, no cookies, CSRF-exempt) skips
    them at the cost of one prefix check. They run in their listed order, hooks included
    (CSRF's process_view), exactly as if they stood in MIDDLEWARE at this position.
    """

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.prefixes = tuple(settings.ADMIN_PATHS)
        self.view_hooks: list[Callable[..., HttpResponse | None]] = []
        handler: Callable[[HttpRequest], Any] = get_response

        for path in reversed(settings.ADMIN_MIDDLEWARE):
            middleware = import_string(path)(handler)
            if hasattr(middleware, "process_view"):
                self.view_hooks.insert(0, middleware.process_view)
            handler = convert_exception_to_response(middleware)
        self.admin_handler = handler

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self.prefixes):
            return self.admin_handler(request)
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponse],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        if not request.path_info.startswith(self.prefixes):
            return None
        for hook in self.view_hooks:
            response = hook(request, view_func, view_args, view_kwargs)
            if response is not None:
                return response
        return None


class RequestMetricsMiddleware:
    """Counts every response by endpoint (the resolved route), method and status class, and
    observes its duration; outermost, so the time covers every other middleware."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        observe_request(request, response.status_code, time.perf_counter() - started)
        return response
