from django.contrib import admin

from tracker.models import AccessEvent, EndpointStat


@admin.register(EndpointStat)
class EndpointStatAdmin(admin.ModelAdmin):
    list_display = [
        "endpoint",
        "access_count",
        "error_count",
        "last_accessed_at",
        "last_response_time_ms",
        "last_pod_name",
    ]
    search_fields = ["endpoint"]
    readonly_fields = [field.name for field in EndpointStat._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AccessEvent)
class AccessEventAdmin(admin.ModelAdmin):
    """Read-only; cheap at 10M rows: no COUNT(*) on the changelist, indexed ordering."""

    list_display = ["occurred_at", "endpoint", "method", "status_code", "duration_ms", "client_ip", "pod_name"]
    list_filter = ["is_error"]
    search_fields = ["=endpoint"]
    ordering = ["-occurred_at"]
    date_hierarchy = None
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = [field.name for field in AccessEvent._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        from tracker.paginators import EstimatedCountPaginator

        return EstimatedCountPaginator(queryset, per_page, orphans, allow_empty_first_page)
