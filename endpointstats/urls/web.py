"""URLconf of the web role: the public API, analytics, the admin and the API docs."""

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from endpointstats.metrics import metrics


class HtmlOptionsMixin:
    """OPTIONS names the methods only: DRF's metadata answer has no HTML template (it was a 500)."""

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return HttpResponse(status=200, headers={"Allow": "GET, HEAD, OPTIONS"})


# The mixin answers with a plain HttpResponse where DRF's options() returns a Response.
class SwaggerUIView(HtmlOptionsMixin, SpectacularSwaggerView):  # type: ignore[misc]
    pass


class RedocView(HtmlOptionsMixin, SpectacularRedocView):  # type: ignore[misc]
    pass


urlpatterns = [
    path("", include("tracker.urls")),
    path("metrics", metrics, name="metrics"),
    path("", include("analytics.urls")),
    path(settings.ADMIN_PATH, admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # A relative schema URL keeps working behind the Ingress, which serves this app under /api/.
    path("api/docs/", SwaggerUIView.as_view(url="../schema/"), name="swagger-ui"),
    path(
        "api/redoc/",
        RedocView.as_view(url="../schema/", template_name="endpointstats/redoc.html"),
        name="redoc",
    ),
]

handler400 = "endpointstats.errors.bad_request"
handler403 = "endpointstats.errors.permission_denied"
handler404 = "endpointstats.errors.page_not_found"
handler500 = "endpointstats.errors.server_error"
