from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "qc_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for an API client. Only the hash is stored; the token is shown once, when made."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="First characters, to tell tokens apart."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(help_text="After this the token signs nothing in.")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, *, user, name: str = "", expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """A new token (qeeg_site.tokens.token_issue checks name and days; this only makes it)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = expires_at or timezone.now() + timedelta(days=settings.API_TOKEN_DAYS)
        row = cls.objects.create(
            user=user, name=name, token_hash=hash_token(token), prefix=token[:10], expires_at=expires_at
        )
        return row, token

    @property
    def lifetime_days(self) -> int:
        return round((self.expires_at - self.created_at).total_seconds() / 86400)

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= timezone.now() else "active"

    def refusal(self) -> str:
        """Why this token signs nothing in ("" while it is active)."""
        if self.revoked_at is not None:
            return f"This token was revoked on {self.revoked_at:%Y-%m-%d %H:%M} UTC; make a new one."
        if self.expires_at <= timezone.now():
            return f"This token expired on {self.expires_at:%Y-%m-%d %H:%M} UTC; make a new one."
        return ""
