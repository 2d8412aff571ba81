"""API endpoints for the caller's own API tokens: list, create (the token is in the answer, once), revoke."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field

import audit
from qeeg_site import tokens
from qeeg_site.models import ApiToken

router = Router(tags=["tokens"])


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    state: str  # active | expired | revoked


class TokenCreated(TokenOut):
    token: str  # shown this once; only its hash is stored


class TokenIn(Schema):
    name: str = Field(default="", max_length=100)
    days: int | None = Field(
        default=None, ge=1, description="Default API_TOKEN_DAYS, at most API_TOKEN_MAX_DAYS."
    )


class ErrorOut(Schema):
    detail: str


def _out(row: ApiToken) -> dict:
    return {field: getattr(row, field) for field in TokenOut.model_fields}


@router.get("/tokens", response=list[TokenOut])
def token_list(request: HttpRequest):
    """Your own tokens, newest first."""
    return [_out(row) for row in tokens.tokens_of(request.user)]


@router.post("/tokens", response={201: TokenCreated, 422: ErrorOut})
def token_create(request: HttpRequest, payload: TokenIn):
    try:
        row, token = tokens.token_issue(user=request.user, name=payload.name, days=payload.days)
    except tokens.TokenRefused as exc:
        raise HttpError(422, exc.message) from exc
    audit.record(request, "token.created", row, days=row.lifetime_days)
    return Status(201, {**_out(row), "token": token})


@router.post("/tokens/{int:token_id}/revoke", response={200: TokenOut, 404: ErrorOut})
def token_revoke(request: HttpRequest, token_id: int):
    row = tokens.token_revoke(user=request.user, token_id=token_id)
    audit.record(request, "token.revoked", row)
    return _out(row)
