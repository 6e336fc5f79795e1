"""/collect and /analytics/*: thin views over analytics.services.collect and analytics.queries.

Outputs are built as plain dicts (a 30-day series can hold tens of thousands of points and
DRF serializers would dominate the response time); the Output serializers document them.
"""

import json
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import queries
from analytics.api.auth import ApiTokenAuthentication, HasApiToken
from analytics.api.serializers import (
    AnalyticsGeoOutput,
    AnalyticsStatsOutput,
    AnalyticsTimeseriesOutput,
    CollectEventInput,
    CollectOutput,
    PagedParams,
    StatsParams,
    TimeseriesParams,
)
from analytics.services import collect
from tracker.api.schema import ErrorOutput, ErrorsAutoSchema


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The body is too large."


class NewEndpointQuota(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    title = "New endpoint quota exceeded"
    default_detail = "This token may introduce no more new endpoint names."


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


class CollectSchema(ErrorsAutoSchema):
    """The body as it is read: JSON only, one event object or a non-empty list of them."""

    def _get_request_body(self, direction: Literal["request", "response"] = "request") -> dict[str, Any]:
        event = self.resolve_serializer(CollectEventInput, direction).ref
        many = {"type": "array", "items": event, "minItems": 1, "maxItems": settings.ANALYTICS_COLLECT_MAX_EVENTS}
        return {"content": {"application/json": {"schema": {"oneOf": [event, many]}}}, "required": True}


class CollectView(APIView):
    """POST /collect : one event (an object) or up to ANALYTICS_COLLECT_MAX_EVENTS (a list).

    All or nothing: if any item is invalid, none is accepted and the 400 names each bad
    item (by its index) and field. Accepted events go through the tracking buffer and drain.
    """

    authentication_classes = [ApiTokenAuthentication]
    permission_classes = [HasApiToken]
    schema = CollectSchema()

    @extend_schema(
        responses={
            201: CollectOutput,
            413: OpenApiResponse(ErrorOutput, description="The body is over ANALYTICS_COLLECT_MAX_BYTES."),
            415: OpenApiResponse(ErrorOutput, description="Not JSON: send Content-Type: application/json."),
            429: OpenApiResponse(
                ErrorOutput,
                description="Over a rate limit, or the token's quota of new endpoint names "
                "(ANALYTICS_COLLECT_NEW_ENDPOINTS_PER_TOKEN) is used up.",
            ),
        }
    )
    def post(self, request: Request) -> Response:
        items = _read_items(request)
        errors, events = {}, []
        for index, item in enumerate(items):
            params = CollectEventInput(data=item) if isinstance(item, dict) else None
            if params is None:
                errors[str(index)] = {"non_field_errors": ["Each event must be a JSON object."]}
            elif not params.is_valid():
                errors[str(index)] = params.errors
            else:
                events.append(CollectEventInput.to_event(params.validated_data))
        if errors:
            raise ValidationError(errors)
        try:
            accepted = collect.collect_events(events=events, token_id=request.auth.pk)
        except collect.NewEndpointQuotaExceeded as error:
            raise NewEndpointQuota(str(error))
        return Response({"status": "success", "accepted": accepted}, status=status.HTTP_201_CREATED)


def _read_items(request: Request) -> list:
    media_type = request.content_type.split(";")[0].strip().lower()
    if media_type and media_type != "application/json":  # no Content-Type at all is read as JSON
        raise UnsupportedMediaType(media_type, detail=f"Send JSON (Content-Type: application/json), not {media_type}.")
    limit = settings.ANALYTICS_COLLECT_MAX_BYTES
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.strip():
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise ParseError("Content-Length is not a number.")
        if too_big:
            raise PayloadTooLarge(f"The body is over {limit} bytes: send fewer events per request.")
    # Read at most one byte past the limit, so a body without Content-Length cannot exhaust memory.
    if not declared.strip() and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        # Django reads a body without Content-Length as empty; gunicorn's input stream de-chunks it.
        body = request.META["wsgi.input"].read(limit + 1)
    else:
        body = request._request.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"The body is over {limit} bytes: send fewer events per request.")
    try:
        payload = json.loads(body or b"null")
    except RecursionError:
        raise ParseError("The body is nested too deeply: an event is a flat JSON object.")
    except (ValueError, UnicodeDecodeError):
        raise ParseError("The body is not valid JSON: send an event object or a list of them.")
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise ParseError("Send an event object or a non-empty list of them.")
    maximum = settings.ANALYTICS_COLLECT_MAX_EVENTS
    if len(items) > maximum:
        raise ValidationError({"events": [f"At most {maximum} events per request; this one has {len(items)}."]})
    return items


class AnalyticsReadView(APIView):
    """The /analytics reads: query parameters validated by `params_class` (a 400 naming each bad
    one), the query answered at the moment of the request."""

    params_class: type[StatsParams] = StatsParams

    def params(self, request: Request) -> dict[str, Any]:
        params = self.params_class(data=request.query_params)
        params.is_valid(raise_exception=True)
        return dict(params.validated_data)


_Row = TypeVar("_Row")


def _page(rows: list[_Row], params: Mapping[str, Any]) -> tuple[list[_Row], dict[str, int | None]]:
    """The page of `rows` that limit/offset ask for, and the paging fields of the answer."""
    limit, offset = params["limit"], params["offset"]
    following = offset + limit
    fields = {
        "count": len(rows),
        "limit": limit,
        "offset": offset,
        "next_offset": following if following < len(rows) else None,
    }
    return rows[offset:following], fields


class AnalyticsStatsView(AnalyticsReadView):
    """GET /analytics/stats?endpoint=&period=&limit=&offset= : per-endpoint figures over the period."""

    params_class = PagedParams

    @extend_schema(parameters=[PagedParams], responses=AnalyticsStatsOutput)
    def get(self, request: Request) -> Response:
        params = self.params(request)
        rows, page = _page(
            queries.endpoint_stats(now=timezone.now(), period=params["period"], endpoint=params.get("endpoint")),
            params,
        )
        stats = [
            {
                "endpoint": row.endpoint,
                "access_count": row.access_count,
                "avg_response_time": _seconds(row.avg_response_time_ms),
                "p95_response_time": _seconds(row.p95_response_time_ms),
                "last_accessed": row.last_accessed_at,
                "unique_clients": row.unique_clients,
                "error_count": row.error_count,
            }
            for row in rows
        ]
        return Response({"period": params["period"], **page, "stats": stats})


class AnalyticsTimeseriesView(AnalyticsReadView):
    """GET /analytics/timeseries?endpoint=&period=&interval= : every bucket, empty ones as zeros."""

    params_class = TimeseriesParams

    @extend_schema(parameters=[TimeseriesParams], responses=AnalyticsTimeseriesOutput)
    def get(self, request: Request) -> Response:
        params = self.params(request)
        try:
            points = queries.timeseries(now=timezone.now(), max_points=settings.ANALYTICS_MAX_POINTS, **params)
        except queries.TooManyPoints as error:
            raise ValidationError({"interval": [str(error)]})
        series = []
        for point in points:
            item: dict[str, Any] = {"timestamp": point.timestamp}
            if point.endpoint is not None:
                item["endpoint"] = point.endpoint
            item["access_count"] = point.access_count
            item["avg_response_time"] = _seconds(point.avg_response_time_ms) or 0.0
            item["error_count"] = point.error_count
            series.append(item)
        return Response({"period": params["period"], "interval": params["interval"], "timeseries": series})


class AnalyticsGeoView(AnalyticsReadView):
    """GET /analytics/geo?period=&endpoint=&limit=&offset= : requests per country (the "Endpoint
    Distribution")."""

    params_class = PagedParams

    @extend_schema(parameters=[PagedParams], responses=AnalyticsGeoOutput)
    def get(self, request: Request) -> Response:
        params = self.params(request)
        rows, page = _page(
            queries.geo_distribution(now=timezone.now(), period=params["period"], endpoint=params.get("endpoint")),
            params,
        )
        return Response(
            {
                "period": params["period"],
                "endpoint": params.get("endpoint"),
                **page,
                "geo": [{"country_code": row.country or None, "access_count": row.access_count} for row in rows],
            }
        )
