"""JSON for the hot endpoints: orjson on plain dicts (a few µs), same output as DRF's."""

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from django.http import HttpResponse
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request


class FastJSONRenderer(JSONRenderer):
    """application/json via orjson. Datetimes are written as DRF's DateTimeField writes UTC ones
    ("...Z"); for plain data (dicts, lists, str, numbers, None, datetimes) only."""

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None
    ) -> bytes:
        if data is None:
            return b""
        return render_json(data)


def render_json(data: Any) -> bytes:
    """Plain data as JSON, datetimes as DRF writes UTC ones ("...Z")."""
    return orjson.dumps(data, option=orjson.OPT_UTC_Z)


def json_response(data: Any) -> HttpResponse:
    """A finished application/json response: what a DRF Response with FastJSONRenderer would send,
    without its template-response machinery (which cost more than the view's own work)."""
    return HttpResponse(render_json(data), content_type=FastJSONRenderer.media_type)


class JSONOnlyNegotiation(BaseContentNegotiation):
    """The hot endpoints answer JSON whatever the Accept header says (DRF's documented
    IgnoreClientContentNegotiation): parsing Accept cost more than rendering the body."""

    # DRF passes lists (the stubs say any iterable): indexing them is the cheapest pick.
    def select_parser(self, request: Request, parsers: Sequence[BaseParser]) -> BaseParser | None:  # type: ignore[override]
        return parsers[0] if parsers else None

    def select_renderer(  # type: ignore[override]
        self, request: Request, renderers: Sequence[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type
