"""Admin pieces every app shares: the read-only pattern and filters that scale to large tables.

tracker is the lowest app (analytics and console import it, it imports neither), so the pattern
lives here once and the import graph stays one-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.dateparse import parse_date, parse_datetime

from tracker.models import EndpointStat

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.contrib.admin.views.main import ChangeList


class ReadOnlyAdminMixin:
    """Rows written only by the pipeline: viewable, never added, changed or deleted from the admin.

    Permissions, not hidden buttons: the add/change/delete views answer 403 and "Delete selected"
    is not offered, whatever the user's model permissions say.
    """

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


def format_ms(value: float | None) -> str:
    """A duration in milliseconds as the changelists show it ("-" when unknown)."""
    return "-" if value is None else f"{value:,.1f}"


class CountsAdminMixin:
    """The request and 5xx counts of a row with access_count and error_count (counters, rollups)."""

    @admin.display(description="requests", ordering="access_count")
    def requests(self, obj: Any) -> str:
        return f"{obj.access_count:,}"

    @admin.display(description="errors (5xx)", ordering="error_count")
    def errors(self, obj: Any) -> str:
        return f"{obj.error_count:,}"


class TextInputFilter(admin.SimpleListFilter):
    """A sidebar filter typed into a box instead of a list of every value (hundreds of endpoints,
    ~250 countries). Subclasses set title, parameter_name and filter_queryset(); `suggestions`
    (optional) fills a <datalist>, so the browser completes while typing."""

    template = "admin/text_input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> tuple[tuple[str, str], ...]:
        return ()

    def has_output(self) -> bool:
        return True

    def suggestions(self) -> list[str]:
        return []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        return self.filter_queryset(queryset, value) if value else queryset

    def filter_queryset(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        raise NotImplementedError

    # The text box template takes its own keys, not the ones of Django's list of choices.
    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        # The form keeps every other filter and the search term as hidden fields.
        params = changelist.get_filters_params()
        hidden = [
            (name, item)
            for name, values in params.items()
            if name != self.parameter_name
            for item in (values if isinstance(values, list) else [values])
        ]
        if changelist.query:
            hidden.append(("q", changelist.query))
        yield {
            "parameter_name": self.parameter_name,
            "value": self.value() or "",
            "hidden": hidden,
            "placeholder": self.placeholder,
            "suggestions": self.suggestions(),
            "list_id": f"suggest-{self.parameter_name}",
        }


class EndpointFilter(TextInputFilter):
    """Exact endpoint (the indexes lead with it), completed from the counters' names (at most
    TRACKING_MAX_ENDPOINTS + 1 small rows, never the raw table)."""

    title = "endpoint"
    parameter_name = "endpoint"
    placeholder = "/stats"

    def suggestions(self) -> list[str]:
        return list(EndpointStat.objects.order_by("endpoint").values_list("endpoint", flat=True))

    def filter_queryset(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(endpoint=value)


class CountryFilter(TextInputFilter):
    title = "country (ISO code)"
    parameter_name = "country"
    placeholder = "DE, or - for unknown"

    def filter_queryset(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(country="" if value == "-" else value.upper()[:2])


def parse_moment(value: str, *, end_of_day: bool = False) -> datetime:
    """A date (whole UTC day) or an ISO datetime (UTC unless it says otherwise)."""
    moment = parse_datetime(value.replace(" ", "T")) if ("T" in value or " " in value) else None
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise IncorrectLookupParameters(f"{value!r} is not a date (YYYY-MM-DD) or a date and time.")
        moment = datetime.combine(day, time.max if end_of_day else time.min)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
