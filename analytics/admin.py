"""Admin: API tokens (created here, shown once, revoked by an action) and read-only rollups."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils import timezone

from analytics.models import ApiToken, DailyStat, GeoStat, HourlyStat
from analytics.services import tokens
from tracker.admin_common import CountryFilter, CountsAdminMixin, EndpointFilter, ReadOnlyAdminMixin, format_ms


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    fields = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, token = tokens.create_token(name=obj.name)
        obj.pk, obj.prefix, obj.token_hash, obj.created_at = row.pk, row.prefix, row.token_hash, row.created_at
        messages.warning(
            request, f"The new API token is {token} - copy it now, it is stored only as a hash and not shown again."
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = tokens.revoke_tokens(ids=list(queryset.values_list("pk", flat=True)), now=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # revoke instead, so who had access stays on record


class RollupAdmin(ReadOnlyAdminMixin, CountsAdminMixin, admin.ModelAdmin):
    """Rollups are written only by aggregation: read-only, newest first, endpoint typed not listed."""

    list_filter = [EndpointFilter]


@admin.register(HourlyStat)
class HourlyStatAdmin(RollupAdmin):
    list_display = ["hour", "endpoint", "requests", "errors", "client_errors", "average_ms", "p95_ms", "unique_clients"]
    ordering = ["-hour", "endpoint"]
    date_hierarchy = "hour"
    exclude = ["latency_histogram", "client_sketch"]

    @admin.display(description="4xx (429)", ordering="client_error_count")
    def client_errors(self, obj: HourlyStat) -> str:
        return f"{obj.client_error_count:,} ({obj.throttled_count:,})"

    @admin.display(description="average (ms)", ordering="avg_response_time_ms")
    def average_ms(self, obj: HourlyStat) -> str:
        return format_ms(obj.avg_response_time_ms)

    @admin.display(description="p95 (ms)", ordering="p95_response_time_ms")
    def p95_ms(self, obj: HourlyStat) -> str:
        return format_ms(obj.p95_response_time_ms)


@admin.register(DailyStat)
class DailyStatAdmin(RollupAdmin):
    list_display = ["day", "endpoint", "requests", "errors"]
    ordering = ["-day", "endpoint"]
    date_hierarchy = "day"
    exclude = ["latency_histogram", "client_sketch"]


@admin.register(GeoStat)
class GeoStatAdmin(RollupAdmin):
    list_display = ["day", "endpoint", "country", "requests"]
    list_filter = [EndpointFilter, CountryFilter]
    ordering = ["-day", "-access_count"]
    date_hierarchy = "day"
