"""Admin: API tokens (created here, shown once, revoked by an action) and read-only rollups."""

from django.contrib import admin, messages
from django.utils import timezone

from analytics import services
from analytics.models import ApiToken, DailyStat, GeoStat, HourlyStat


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    fields = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        row, token = services.create_token(name=obj.name)
        obj.pk, obj.prefix, obj.token_hash, obj.created_at = row.pk, row.prefix, row.token_hash, row.created_at
        messages.warning(
            request, f"The new API token is {token} - copy it now, it is stored only as a hash and not shown again."
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        count = services.revoke_tokens(ids=list(queryset.values_list("pk", flat=True)), now=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead, so who had access stays on record


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(HourlyStat)
class HourlyStatAdmin(ReadOnlyAdmin):
    list_display = ["hour", "endpoint", "access_count", "error_count", "p95_response_time_ms", "unique_clients"]
    list_filter = ["endpoint"]
    date_hierarchy = "hour"
    exclude = ["latency_histogram", "client_sketch"]


@admin.register(DailyStat)
class DailyStatAdmin(ReadOnlyAdmin):
    list_display = ["day", "endpoint", "access_count", "error_count"]
    list_filter = ["endpoint"]
    date_hierarchy = "day"
    exclude = ["latency_histogram", "client_sketch"]


@admin.register(GeoStat)
class GeoStatAdmin(ReadOnlyAdmin):
    list_display = ["day", "endpoint", "country", "access_count"]
    list_filter = ["country"]
    date_hierarchy = "day"
