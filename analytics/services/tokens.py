"""API tokens for /collect and /analytics: created and revoked in the admin, checked per request."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from analytics.models import ApiToken

TOKEN_PREFIX = "es_"  # noqa: S105 - a label, not a secret


def hash_token(token: str) -> str:
    """What is stored of a token (SHA-256, hex): enough to recognise it, not to rebuild it."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(*, name: str) -> tuple[ApiToken, str]:
    """A new active token; returns the row and the token itself, which is not stored anywhere."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(name=name, token_hash=hash_token(token), prefix=token[:10])
    return row, token


def revoke_tokens(*, ids: list[int], now: datetime) -> int:
    """Revoke the given tokens (idempotent: an already revoked one keeps its time)."""
    return ApiToken.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=now)


def authenticate_token(*, token: str, now: datetime) -> ApiToken | None:
    """The active token row for a presented token, or None. Marks it used (at most once a minute)."""
    if not token:
        return None
    row = ApiToken.objects.filter(token_hash=hash_token(token), revoked_at__isnull=True).first()
    if row is not None and (row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1)):
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row
