"""Admin of the tracking tables: read-only, and built for 10M events (no COUNT(*), no DISTINCT sidebars)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db import connection
from django.db.models import ExpressionWrapper, F, FloatField, QuerySet, Value
from django.db.models.functions import NullIf
from django.http import HttpRequest

from tracker.admin_common import (
    CountryFilter,
    CountsAdminMixin,
    EndpointFilter,
    ReadOnlyAdminMixin,
    TextInputFilter,
    format_ms,
    parse_moment,
)
from tracker.models import AccessEvent, EndpointStat
from tracker.paginators import EstimatedCountPaginator

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin


@admin.register(EndpointStat)
class EndpointStatAdmin(ReadOnlyAdminMixin, CountsAdminMixin, admin.ModelAdmin):
    """Running counters (written only by the drain)."""

    list_display = [
        "endpoint",
        "requests",
        "success_rate_display",
        "average_ms",
        "errors",
        "last_accessed_at",
        "last_ms",
        "last_pod_name",
    ]
    search_fields = ["endpoint"]
    search_help_text = "Part of an endpoint, e.g. /items"
    ordering = ["-access_count"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[EndpointStat]:
        access = NullIf(F("access_count"), Value(0))
        return (
            super()
            .get_queryset(request)
            .annotate(
                success_pct=ExpressionWrapper(100.0 * F("success_count") / access, output_field=FloatField()),
                average=ExpressionWrapper(F("total_response_time_ms") / access, output_field=FloatField()),
            )
        )

    @admin.display(description="success rate", ordering="success_pct")
    def success_rate_display(self, obj: EndpointStat) -> str:
        return f"{obj.success_rate:.1f}%"

    @admin.display(description="average (ms)", ordering="average")
    def average_ms(self, obj: EndpointStat) -> str:
        return format_ms(obj.avg_response_time_ms)

    @admin.display(description="last (ms)", ordering="last_response_time_ms")
    def last_ms(self, obj: EndpointStat) -> str:
        return format_ms(obj.last_response_time_ms)


class StatusClassFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"
    RANGES = {"2xx": (200, 300), "3xx": (300, 400), "4xx": (400, 500), "5xx": (500, 600), "429": (429, 430)}

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(key, "429 (rate limited)" if key == "429" else key) for key in self.RANGES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in self.RANGES:
            low, high = self.RANGES[value]
            return queryset.filter(status_code__gte=low, status_code__lt=high)
        return queryset


class MethodFilter(admin.SimpleListFilter):
    """A fixed list: a DISTINCT over the raw table would read all of it."""

    title = "method"
    parameter_name = "method"
    METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(method, method) for method in self.METHODS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(method=self.value()) if self.value() else queryset


class OccurredFromFilter(TextInputFilter):
    title = "from (UTC)"
    parameter_name = "from"
    placeholder = "2026-03-01 or 2026-03-01T10:00"

    def filter_queryset(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(occurred_at__gte=parse_moment(value))


class OccurredUntilFilter(TextInputFilter):
    title = "until (UTC)"
    parameter_name = "until"
    placeholder = "2026-03-02 (whole day)"

    def filter_queryset(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(occurred_at__lte=parse_moment(value, end_of_day=True))


class PodFilter(TextInputFilter):
    title = "pod"
    parameter_name = "pod"
    placeholder = "web-7c9f-abcde"

    def filter_queryset(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(pod_name=value)


@admin.register(AccessEvent)
class AccessEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only; cheap at 10M rows: no COUNT(*) on the changelist, indexed ordering, typed filters."""

    list_display = ["occurred_at", "endpoint", "method", "status_code", "duration", "client_ip", "country", "pod_name"]
    list_filter = [
        OccurredFromFilter,
        OccurredUntilFilter,
        EndpointFilter,
        StatusClassFilter,
        MethodFilter,
        PodFilter,
        CountryFilter,
    ]
    search_fields = ["endpoint"]  # the real matching is in get_search_results
    search_help_text = "A client address (203.0.113.7), a network (203.0.113.0/24) or an endpoint start (/items/)"
    ordering = ["-occurred_at"]
    show_full_result_count = False
    list_per_page = 50
    paginator = EstimatedCountPaginator

    @admin.display(description="duration (ms)", ordering="duration_ms")
    def duration(self, obj: AccessEvent) -> str:
        return format_ms(obj.duration_ms)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AccessEvent], search_term: str
    ) -> tuple[QuerySet[AccessEvent], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(client_ip=str(ipaddress.ip_address(term))), False
        except ValueError:
            pass
        if "/" in term and term[0] != "/" and connection.vendor == "postgresql":
            try:
                network = ipaddress.ip_network(term, strict=False)
            except ValueError:
                return queryset.none(), False
            # inet containment: PostgreSQL's <<= operator (no Django lookup for it).
            return queryset.extra(where=["client_ip <<= %s::inet"], params=[str(network)]), False  # noqa: S610
        return queryset.filter(endpoint__startswith=term), False
