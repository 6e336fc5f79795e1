"""URLconf of the limiter role: rate-limit decisions for other callers (/check, /limits, /health*, /metrics)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from endpointstats.metrics import metrics

urlpatterns = [
    path("", include("ratelimit.urls")),
    path("metrics", metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]

handler400 = "endpointstats.errors.bad_request"
handler403 = "endpointstats.errors.permission_denied"
handler404 = "endpointstats.errors.page_not_found"
handler500 = "endpointstats.errors.server_error"
