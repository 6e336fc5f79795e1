"""The OpenAPI schema tells the truth about refusals: each operation lists every status it can answer.

Views document their own answers (a 2xx, and refusals only they make, such as /check's 429 or
/collect's 413 and 415). This AutoSchema adds what the edges add to every operation: 400 when it
takes query parameters or a body, 401 when it needs a token, and on the web role's rate-limited
routes 429 (over a limit) and 503 (Redis unreachable with RATELIMIT_FAIL_OPEN=false, or a data
store down). Every refusal has the same body, ErrorOutput.
"""

from typing import Any

from django.conf import settings
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ComponentRegistry
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class ErrorOutput(serializers.Serializer):
    error = serializers.CharField(help_text="What went wrong, in a few words.")
    message = serializers.CharField(help_text="What to fix.")
    details = serializers.DictField(required=False, help_text="400 only: each invalid field (or item) -> problems.")


ADDED = {
    "400": "Invalid parameters or body: `details` names each field (and item) and what to fix.",
    "401": "No token, a malformed Authorization header, or an unknown or revoked token.",
    "429": "Over a rate limit (Retry-After says when to retry).",
    "503": "A data store is unreachable (Retry-After says when to retry).",
}


class ErrorsAutoSchema(AutoSchema):
    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str, registry: ComponentRegistry
    ) -> dict[str, Any] | None:

        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        codes = []
        if operation.get("parameters") or operation.get("requestBody"):
            codes.append("400")
        if operation.get("security"):
            codes.append("401")
        if settings.ROLE == "web" and not any(path.startswith(p) for p in settings.RATELIMIT_EXEMPT_PATHS):
            codes += ["429", "503"]
        if codes:
            error = self.resolve_serializer(ErrorOutput, "response").ref
            responses = operation["responses"]
            for code in codes:
                responses.setdefault(
                    code, {"content": {"application/json": {"schema": error}}, "description": ADDED[code]}
                )
            operation["responses"] = dict(sorted(responses.items()))
        return operation


@extend_schema_field({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
class IPAddressField(serializers.IPAddressField):
    """An IPv4 or IPv6 address, documented as such (the stock field's schema is any string)."""


@extend_schema_field({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, {"enum": [""]}]})
class OptionalIPAddressField(serializers.IPAddressField):
    """An IPv4 or IPv6 address, or an empty string for none."""
