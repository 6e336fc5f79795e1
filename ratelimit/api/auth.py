"""The limiter's /check is for named callers only: a shared token (LIMITER_TOKEN / LIMITER_TOKEN_FILE).

/check increments the very counters web enforces, so an anonymous caller could lock any client out
of web. The NetworkPolicy limits who can reach the limiter; the token limits who may count.
"""

import hmac

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import APIException, AuthenticationFailed, NotAuthenticated
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView


class LimiterCaller:
    """A caller that presented a valid limiter token (a service, not a Django user)."""

    is_authenticated = True


class LimiterNotConfigured(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "No limiter token is configured: set LIMITER_TOKEN or LIMITER_TOKEN_FILE on the limiter."
    default_code = "limiter_not_configured"


def token_is_valid(presented: str) -> bool:
    """Constant-time comparison against every configured token (a rotation keeps old and new)."""
    return any(hmac.compare_digest(presented.encode(), token.encode()) for token in settings.LIMITER_TOKENS)


class LimiterTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>`; a missing, malformed or wrong token is a 401."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[LimiterCaller, None]:
        if not settings.LIMITER_TOKENS:
            raise LimiterNotConfigured()
        parts = get_authorization_header(request).split()
        if not parts:
            raise NotAuthenticated(HasLimiterToken.message)
        if len(parts) != 2 or parts[0].decode(errors="replace").lower() != "bearer":
            raise AuthenticationFailed("Send the limiter token as 'Authorization: Bearer <token>'.")
        if not token_is_valid(parts[1].decode(errors="replace")):
            raise AuthenticationFailed("The limiter token is wrong: use the one in the limiter's LIMITER_TOKEN.")
        return LimiterCaller(), None

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class HasLimiterToken(BasePermission):
    message = "Send the limiter token as 'Authorization: Bearer <token>' (LIMITER_TOKEN on the limiter)."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.user, LimiterCaller)


class LimiterTokenScheme(OpenApiAuthenticationExtension):
    """Documents the limiter token in the limiter's OpenAPI schema."""

    target_class = "ratelimit.api.auth.LimiterTokenAuthentication"
    name = "LimiterToken"

    def get_security_definition(self, auto_schema: AutoSchema | None) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "The shared token in LIMITER_TOKEN."}
