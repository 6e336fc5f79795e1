"""URLconf of the web role: the public API, analytics, the admin and the API docs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("", include("tracker.urls")),
    path("", include("analytics.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # A relative schema URL keeps working behind the Ingress, which serves this app under /api/.
    path("api/docs/", SpectacularSwaggerView.as_view(url="../schema/"), name="swagger-ui"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url="../schema/", template_name="endpointstats/redoc.html"),
        name="redoc",
    ),
]

handler400 = "endpointstats.errors.bad_request"
handler403 = "endpointstats.errors.permission_denied"
handler404 = "endpointstats.errors.page_not_found"
handler500 = "endpointstats.errors.server_error"
