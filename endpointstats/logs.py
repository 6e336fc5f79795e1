"""Log lines a cluster can use: JSON (LOG_FORMAT=json) with the role, the pod and the request id.

RequestIdMiddleware gives every request an id: the incoming `X-Request-ID` (ingress-nginx sets
one per request) when it is a sane token, else a new one. The response returns it in
`X-Request-ID`, and every line logged while the request is handled carries it (a ContextVar, read
by ContextFilter). Cost: one header read, one regex match or 16 random bytes, one header write (docs/PERFORMANCE.md).
"""

import contextvars
import logging
import os
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:  # gunicorn's config imports this module before Django is set up
    from django.http import HttpRequest, HttpResponse


HEADER = "X-Request-ID"
# Letters, digits and - _ . : (uuids, hex ids, W3C trace ids), at most 128: never log injected text.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestIdMiddleware:
    """Outermost: sets the request id for everything below it and adds it to the response."""

    def __init__(self, get_response: "Callable[[HttpRequest], HttpResponse]") -> None:
        self.get_response = get_response

    def __call__(self, request: "HttpRequest") -> "HttpResponse":

        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        value = incoming if VALID_REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()  # uuid4 costs 7x more
        request.request_id = value  # type: ignore[attr-defined]  # our own attribute, read by views and tests

        token = request_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response[HEADER] = value
        return response


class ContextFilter(logging.Filter):
    """Adds role, pod and request_id (None outside a request) to every record."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.role = os.environ.get("ROLE", "web")
        self.pod = os.environ.get("POD_NAME") or socket.gethostname()

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.pod = self.pod
        if not hasattr(record, "request_id"):
            # django.request logs a 4xx/5xx after the middleware chain returned: it passes the request.
            record.request_id = request_id.get() or getattr(getattr(record, "request", None), "request_id", None)
        return True


class RefusalFilter(logging.Filter):
    """Drops django.request's warning for each 429. A client flooding over its limit would otherwise
    write one log line per refused request; refusals are counted instead (the decisions metric, the
    console's refusals per minute). Other 4xx and every 5xx are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 429


class GunicornAccessFilter(ContextFilter):
    """gunicorn's access lines: the request id is the response header gunicorn logs as an atom."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args if isinstance(record.args, dict) else {}
        if atoms:
            record.request_id = atoms.get("{x-request-id}o") or None
            record.method, record.path, record.status = atoms.get("m"), atoms.get("U"), atoms.get("s")
            record.duration_ms = round(int(atoms.get("D", 0)) / 1000.0, 3)
        return super().filter(record)


def json_formatter() -> JsonFormatter:
    # One object per line: time (ISO 8601, UTC), level, logger, message, role, pod, request_id,
    # plus whatever a line adds as `extra` (exc_info as text).
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(role)s %(pod)s %(request_id)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def logging_config(*, log_format: str, level: str) -> dict:
    """Django's LOGGING: plain text for a terminal, JSON lines for a cluster."""
    if log_format == "json":
        logging.captureWarnings(True)  # Python warnings become log lines (JSON) instead of stderr text
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}, "refusals": {"()": RefusalFilter}},
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": json_formatter},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "django.request": {"filters": ["refusals"]},
            # The drain runs every second: its received/succeeded lines would drown everything else.
            "celery.app.trace": {"level": "WARNING"},
            "celery.worker.strategy": {"level": "WARNING"},
            "celery.beat": {"level": "WARNING"},
        },
    }


def gunicorn_logconfig() -> dict | None:
    """gunicorn's own lines (error and access logs) as JSON when LOG_FORMAT=json; None keeps its default."""
    if os.environ.get("LOG_FORMAT", "plain") != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}, "access": {"()": GunicornAccessFilter}},
        "formatters": {"json": {"()": json_formatter}},
        "handlers": {
            "error": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]},
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["access"],
                "stream": "ext://sys.stdout",
            },
        },
        "root": {"level": "INFO", "handlers": ["error"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["error"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
