"""JSON error responses: every refusal says what to fix, no response ever carries a traceback."""

import logging
import sys
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

# A data store that cannot be reached (stopped, restarting, failing over) is a 503 the client may retry,
# never a 500: the request was fine and the outage is usually seconds long (docs/RELIABILITY.md).
DEPENDENCY_ERRORS = (OperationalError, InterfaceError, RedisError, ConnectionInterrupted)
RETRY_AFTER_SECONDS = 5


def _unavailable_body(exc: BaseException) -> dict[str, str]:
    store = "database" if isinstance(exc, OperationalError | InterfaceError) else "Redis"
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    logger.warning("Answered 503: the %s is unavailable (%s)", store, first_line)
    return {"error": "Service unavailable", "message": f"The {store} is unavailable; retry in a few seconds."}


def dependency_unavailable(exc: BaseException) -> JsonResponse:
    response = JsonResponse(_unavailable_body(exc), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF errors as {"error": <short>, "message": <what to fix>, "details"?: <field errors>}."""
    if isinstance(exc, DEPENDENCY_ERRORS):
        return Response(_unavailable_body(exc), status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error in %s", context.get("view"))
        return Response({"error": "Internal server error", "message": "The error was logged."}, status=500)
    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "error": "Invalid request",
            "message": "Fix the fields listed in details.",
            "details": exc.detail,
        }
    elif isinstance(response.data, dict) and "detail" in response.data:
        title = getattr(exc, "title", None) or _short(response.status_code)
        response.data = {"error": title, "message": str(response.data["detail"])}
    return response


def _short(status: int) -> str:
    return {
        400: "Bad request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        406: "Not acceptable",
        413: "Payload too large",
        415: "Unsupported media type",
        429: "Rate limit exceeded",
    }.get(status, "Error")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": "Bad request", "message": "The request could not be understood."}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": "Forbidden", "message": "You may not access this resource."}, status=403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        {"error": "Not found", "message": f"No endpoint at {request.path}. See /api/docs/ for the API."}, status=404
    )


def server_error(request: HttpRequest) -> JsonResponse:
    # Django calls this inside its except block: a data store outage outside DRF views (admin, sessions) is a 503 too.
    exc = sys.exc_info()[1]
    if isinstance(exc, DEPENDENCY_ERRORS):
        return dependency_unavailable(exc)
    return JsonResponse({"error": "Internal server error", "message": "The error was logged."}, status=500)
