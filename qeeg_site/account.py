"""The signed-in user's own account pages: API tokens (list, create — shown once —, revoke)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

import audit
from qeeg_site import tokens


def _days(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        return 0  # refused with the range by token_issue


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the user's tokens. POST: make one and show it on this page, once (it is stored nowhere)."""
    context = {"new_token": None, "error": "", "name": "", "days": settings.API_TOKEN_DAYS}
    status = 200
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            row, token = tokens.token_issue(
                user=request.user, name=name, days=_days(request.POST.get("days"))
            )
        except tokens.TokenRefused as exc:
            context.update(error=exc.message, name=name, days=request.POST.get("days", ""))
            status = 422
        else:
            audit.record(request, "token.created", row, days=row.lifetime_days)
            context.update(new_token=token, new_row=row)
            status = 201
    context["tokens"] = tokens.tokens_of(request.user)
    context["max_days"] = settings.API_TOKEN_MAX_DAYS
    return render(request, "account/tokens.html", context, status=status)


@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    row = tokens.token_revoke(user=request.user, token_id=pk)
    audit.record(request, "token.revoked", row)
    messages.success(request, f"Token {row.prefix}… {row.name or ''} revoked; it signs nothing in any more.")
    return redirect("account-tokens")
