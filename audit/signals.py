"""Sign-in events reach the trail through Django's (and django-axes') own signals, whichever view signed in."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.http import HttpRequest

import audit
from audit import bounds


def _signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit.record(request if request is not None else user, "sign_in", user)


def _signed_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    reason = getattr(request, "audit_sign_out_reason", "")
    audit.record(user if request is None else _as(request, user), reason or "sign_out", user)


def _failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # The name typed, so a guessing attack shows; never the password (Django masks it in `credentials`).
    if _admitted(request, "sign_in.failed"):
        audit.record(request, "sign_in.failed", username=str(credentials.get("username", ""))[:150])


def _locked_out(sender: Any, request: HttpRequest | None = None, username: str = "", **kwargs: Any) -> None:
    if _admitted(request, "sign_in.locked_out"):
        audit.record(request, "sign_in.locked_out", username=str(username or "")[:150])


def _admitted(request: HttpRequest | None, action: str) -> bool:
    """Within the address's bound of such rows this window (audit.bounds); past it the attempt is counted."""
    if not isinstance(request, HttpRequest):
        return True
    return bounds.admit(action, None, *audit.origin_of(request))


def _as(request: HttpRequest, user: Any) -> HttpRequest:
    # At sign-out request.user is still the user; keep the request for its address.
    request.user = user
    return request


def connect() -> None:
    from axes.signals import user_locked_out

    user_logged_in.connect(_signed_in, dispatch_uid="audit.sign_in")
    user_logged_out.connect(_signed_out, dispatch_uid="audit.sign_out")
    user_login_failed.connect(_failed, dispatch_uid="audit.sign_in_failed")
    user_locked_out.connect(_locked_out, dispatch_uid="audit.locked_out")
