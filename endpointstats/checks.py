"""System checks for the admin's middleware stack (endpointstats.middleware.AdminMiddleware)."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

CSRF_MIDDLEWARE = "django.middleware.csrf.CsrfViewMiddleware"


@register()
def check_admin_middleware(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Error]:
    """Stands in for the checks silenced in settings because this middleware moved into
    ADMIN_MIDDLEWARE (admin.E408-E410, security.W003): the admin still gets all four."""
    needed = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        CSRF_MIDDLEWARE,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ]
    if "endpointstats.middleware.AdminMiddleware" not in settings.MIDDLEWARE:
        return []
    return [
        Error(f"{name} must be in ADMIN_MIDDLEWARE for the admin.", id="endpointstats.E001")
        for name in needed
        if name not in settings.ADMIN_MIDDLEWARE
    ]


@register(Tags.security, deploy=True)
def check_csrf_cookie_secure(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Warning]:
    """Django's security.W016, which looks for the CSRF middleware in MIDDLEWARE only."""
    if CSRF_MIDDLEWARE not in settings.ADMIN_MIDDLEWARE or settings.CSRF_USE_SESSIONS or settings.CSRF_COOKIE_SECURE:
        return []
    return [
        Warning(
            "CSRF_COOKIE_SECURE is not True: the admin's CSRF cookie may travel over plain HTTP.",
            id="endpointstats.W016",
        )
    ]
