from django.urls import path

from analytics.api import views

urlpatterns = [
    path("collect", views.CollectView.as_view(), name="analytics-collect"),
    path("analytics/stats", views.AnalyticsStatsView.as_view(), name="analytics-stats"),
    path("analytics/timeseries", views.AnalyticsTimeseriesView.as_view(), name="analytics-timeseries"),
    path("analytics/geo", views.AnalyticsGeoView.as_view(), name="analytics-geo"),
]
