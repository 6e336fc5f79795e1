"""URLconf of the limiter role: rate-limit decisions for other callers."""

from django.urls import path

from endpointstats.metrics import metrics
from tracker.api.views import HealthLiveView, HealthView

urlpatterns = [
    path("health", HealthView.as_view(), name="health"),
    path("health/live", HealthLiveView.as_view(), name="health-live"),
    path("health/ready", HealthView.as_view(readiness=True), name="health-ready"),
    path("metrics", metrics, name="metrics"),
]

handler400 = "endpointstats.errors.bad_request"
handler403 = "endpointstats.errors.permission_denied"
handler404 = "endpointstats.errors.page_not_found"
handler500 = "endpointstats.errors.server_error"
