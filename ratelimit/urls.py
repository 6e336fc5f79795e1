"""Routes of the limiter role (mounted by endpointstats/urls/limiter.py)."""

from django.urls import path

from ratelimit.api import views
from tracker.api.views import HealthLiveView

urlpatterns = [
    path("check", views.CheckView.as_view(), name="check"),
    path("limits", views.LimitsView.as_view(), name="limits"),
    path("health", views.LimiterHealthView.as_view(), name="health"),
    path("health/live", HealthLiveView.as_view(), name="health-live"),
    path("health/ready", views.LimiterHealthView.as_view(readiness=True), name="health-ready"),
]
