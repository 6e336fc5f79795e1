"""A JSON renderer for the hot endpoints: orjson on plain dicts (a few µs), same output as DRF's."""

import orjson
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer


class FastJSONRenderer(JSONRenderer):
    """application/json via orjson. Datetimes are written as DRF's DateTimeField writes UTC ones
    ("...Z"); for plain data (dicts, lists, str, numbers, None, datetimes) only."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data, option=orjson.OPT_UTC_Z)


class JSONOnlyNegotiation(BaseContentNegotiation):
    """The hot endpoints answer JSON whatever the Accept header says (DRF's documented
    IgnoreClientContentNegotiation): parsing Accept cost more than rendering the body."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
