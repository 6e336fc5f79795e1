from django.urls import path

from tracker.api import views

urlpatterns = [
    path("", views.WelcomeView.as_view(), name="welcome"),
    path("stats", views.StatsView.as_view(), name="stats"),
    path("health", views.HealthView.as_view(), name="health"),
    path("health/live", views.HealthLiveView.as_view(), name="health-live"),
    path("health/ready", views.HealthView.as_view(readiness=True), name="health-ready"),
]
