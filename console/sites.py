"""The admin site of the product: the overview as its index, the console's pages, a rate-limited login."""

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django_ratelimit.core import is_ratelimited

from tracker.clients import client_ip


def _client(group: str | None, request: HttpRequest) -> str:
    return client_ip(request) or "unknown"


def _username(group: str | None, request: HttpRequest) -> str:
    return (request.POST.get("username") or "").strip().lower()


class ConsoleAdminSite(admin.AdminSite):
    site_header = "Endpoint Stats console"
    site_title = "Endpoint Stats"
    index_title = "Overview"
    login_template = "console/login.html"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        from console import views

        own = [
            path("console/endpoint/", self.admin_view(views.endpoint_detail(self)), name="console_endpoint"),
            path("console/operations/", self.admin_view(views.operations(self)), name="console_operations"),
            path(
                "console/operations/<str:kind>/",
                self.admin_view(views.start_operation(self)),
                name="console_start_operation",
            ),
        ]
        return own + super().get_urls()

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The first page a staff user sees: the overview, with the models below it."""
        from console import views

        return views.overview(self)(request)

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Django's login, limited per client address and per username (django-ratelimit, on the
        shared cache): past either limit a POST answers 429 without checking the password."""
        if request.method == "POST":
            # Both counters count every attempt: evaluate both, so one cannot hide the other.
            by_client = is_ratelimited(
                request, group="admin-login-client", key=_client, rate=settings.ADMIN_LOGIN_RATE_PER_CLIENT,
                method="POST", increment=True,
            )  # fmt: skip
            by_user = bool(_username(None, request)) and is_ratelimited(
                request, group="admin-login-username", key=_username, rate=settings.ADMIN_LOGIN_RATE_PER_USERNAME,
                method="POST", increment=True,
            )  # fmt: skip
            if by_client or by_user:
                context = {
                    **self.each_context(request),
                    "title": "Log in",
                    "subtitle": None,
                    "app_path": request.get_full_path(),
                    "form": AdminAuthenticationForm(request),
                    "throttled_message": (
                        "Too many login attempts "
                        + ("for this username" if by_user and not by_client else "from your address")
                        + ". Wait a few minutes before trying again."
                    ),
                    **(extra_context or {}),
                }
                return TemplateResponse(request, self.login_template, context, status=429)
        return super().login(request, extra_context)
