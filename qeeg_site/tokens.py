"""API tokens: issue, list, revoke. One path for the account page, the API and `createapitoken`.

A token is shown once, when made; only its SHA-256 is stored. Each has a name, an expiry (API_TOKEN_DAYS by
default, at most API_TOKEN_MAX_DAYS) and may be revoked by its owner; an expired or revoked token signs
nothing in, and the refusal says which.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

import audit
from qeeg_site.models import ApiToken


class TokenRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def tokens_of(user: Any) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-pk")


def token_issue(*, user: Any, name: str = "", days: int | None = None) -> tuple[ApiToken, str]:
    """A new token for `user`; returns the row and the token itself (shown once, never stored)."""
    days = settings.API_TOKEN_DAYS if days is None else days
    if not 1 <= days <= settings.API_TOKEN_MAX_DAYS:
        raise TokenRefused(f"A token lasts 1 to {settings.API_TOKEN_MAX_DAYS} days (API_TOKEN_MAX_DAYS).")
    name = name.strip()
    if len(name) > 100:
        raise TokenRefused("A token's name is at most 100 characters.")
    if not user.is_active:
        raise TokenRefused(f"User {user.get_username()!r} is inactive.")
    return ApiToken.issue(user=user, name=name, expires_at=timezone.now() + timedelta(days=days))


def token_revoke(*, user: Any, token_id: int) -> ApiToken:
    """Revoke one of `user`'s own tokens (a token of anyone else is not found). Revoking twice is harmless."""
    row = tokens_of(user).filter(pk=token_id).first()
    if row is None:
        audit.record_refusal(user, 404, "apitoken", token_id)
        raise Http404(f"You have no token {token_id}.")
    if row.revoked_at is None:
        ApiToken.objects.filter(pk=row.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        row.refresh_from_db()
    return row
