"""Bearer-token authentication for POST /collect (tokens are created and revoked in the admin)."""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from analytics.models import ApiToken
from analytics.services import tokens


class TokenCaller:
    """The authenticated caller of /collect: a service holding an ApiToken, not a Django user."""

    is_authenticated = True

    def __init__(self, token: ApiToken) -> None:
        self.token = token


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>`; a wrong or revoked token is a 401, never a 403."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[TokenCaller, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts:
            return None
        if parts[0].decode(errors="replace").lower() != self.keyword.lower() or len(parts) != 2:
            raise AuthenticationFailed("Send the API token as 'Authorization: Bearer <token>'.")
        row = tokens.authenticate_token(token=parts[1].decode(errors="replace"), now=timezone.now())
        if row is None:
            raise AuthenticationFailed("The API token is unknown or revoked: ask an admin for a new one.")
        return TokenCaller(row), row

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class HasApiToken(BasePermission):
    message = "Send an API token as 'Authorization: Bearer <token>' (tokens are created in the admin)."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.auth is not None


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Documents the bearer token in the OpenAPI schema (/api/docs/)."""

    target_class = "analytics.api.auth.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema: AutoSchema | None) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A token created in the admin."}
