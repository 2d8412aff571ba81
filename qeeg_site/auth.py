"""Who may see what: pages need a signed-in user; the API takes a session or a bearer token."""

from __future__ import annotations

import functools
import io
import random
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial, wraps
from importlib import import_module
from typing import Any
from urllib.parse import urlencode, urlsplit

from asgiref.sync import sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import SESSION_KEY, get_user_model, logout
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.models import Permission
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, models
from django.db.models import OuterRef, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils import timezone
from ninja.security import HttpBearer, SessionAuth

import audit
from qeeg_site.json_rows import compiled, json_values
from qeeg_site.models import ApiToken, hash_token
from qeeg_site.prepared import Prepared


class PermissionsBackend(ModelBackend):
    """Django's ModelBackend reading a user's permissions, their own and their roles' (groups), in one query
    instead of one each: every page and API call of a signed-in user asks for them once. A session's user
    and a token's have them read in the query that reads the user (`with_perms`), so none at all.

    Its answer is the whole answer: a permission it does not find is refused here (PermissionDenied stops
    Django's walk over the backends), so the stock ModelBackend listed after it, there only so the sessions
    it signed in before stay valid, never reads the permissions again."""

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        if user_obj.is_active and super().has_perm(user_obj, perm, obj):
            return True
        raise PermissionDenied

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            held = Permission.objects.all() if user_obj.is_superuser else _held(user_obj)
            rows = held.values_list("content_type__app_label", "codename").order_by().distinct()
            user_obj._perm_cache = {f"{app}.{codename}" for app, codename in rows}
        return user_obj._perm_cache

    def get_user(self, user_id: Any) -> Any:
        """ModelBackend's, with the user's permissions read in the same query (`with_perms`)."""
        user = next(iter(_user_read(user_id)), None)
        if user is None or not self.user_can_authenticate(user):
            return None
        return held_perms(user, user)


# Every signed-in page and request asks these two; compiled once (building them was ~1 ms a request).
_user_read = Prepared(
    lambda pk: with_perms(get_user_model()._default_manager.filter(pk=pk), "pk").order_by("pk")[:1],
    get_user_model()._meta.pk,
)
_token_read = Prepared(
    lambda token_hash: with_perms(
        ApiToken.objects.select_related("user").filter(token_hash=token_hash), "user_id"
    )[:1],
    ApiToken._meta.get_field("token_hash"),
)


def _held(user: Any) -> models.QuerySet[Permission]:
    """The permissions a user holds, their own and their roles' (`user`: a user, or an OuterRef to one)."""
    return Permission.objects.filter(Q(user=user) | Q(group__user=user))


_PERMS_READ = "perms_read"


def with_perms(rows: models.QuerySet, key: str) -> models.QuerySet:
    """`rows` (users, or rows with a user: `key` is the user's key, "pk" or "user_id") with the user's
    permission names read in the same query; `held_perms` then hands them to the user, so `has_perm` reads
    nothing more. A superuser holds every permission, and Django answers for one without asking."""
    return rows.annotate(**_perms_read(rows.model, key, connection.vendor))


@functools.cache
def _perms_read(model: type[models.Model], key: str, vendor: str) -> dict[str, Any]:
    names = json_values(_held(OuterRef(key)), app="content_type__app_label", codename="codename")
    return compiled(model, **{_PERMS_READ: names})  # once: building it was 2 ms a request


def held_perms(row: Any, user: Any) -> Any:
    """Hand `user` the permissions read with `row` (a `with_perms` row; it may be the user itself), as
    `get_all_permissions` would have read them."""
    if not user.is_superuser:
        user._perm_cache = {f"{held['app']}.{held['codename']}" for held in getattr(row, _PERMS_READ) or []}
    return user


class LoginRequiredPagesMiddleware(LoginRequiredMiddleware):
    """Every page needs a signed-in user. The API answers for itself (401 JSON, never a redirect)."""

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)

    def handle_no_permission(self, request: HttpRequest, view_func) -> HttpResponse:
        if _is_htmx(request):
            return _whole_page_to_sign_in(request, self.get_login_url(view_func))
        return super().handle_no_permission(request, view_func)


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _whole_page_to_sign_in(request: HttpRequest, login_url: str) -> HttpResponse:
    """An htmx fragment (a poll, a search) must not get the sign-in page swapped into it: the whole page goes
    to sign in, and comes back to where it was."""
    page = urlsplit(request.headers.get("HX-Current-URL", "")).path or "/"
    response = HttpResponse(status=204)
    response["HX-Redirect"] = f"{resolve_url(login_url)}?{urlencode({'next': page})}"
    return response


# What the pages' own requests carry (polls, the upstream banner's re-check, the run page's refreshes driven
# by its live stream): they are not activity, or an open page would never be signed out for idleness.
BACKGROUND_HEADER = "X-Background-Request"


class IdleTimeoutMiddleware:
    """Signs a session out after SESSION_IDLE_TIMEOUT_SECONDS without a request, on top of the absolute
    SESSION_COOKIE_AGE. The last request's time is written at most every minute (a tenth of the timeout when
    that is shorter). A request the page makes by itself (BACKGROUND_HEADER: polls, the banner, the run
    page's stream-driven refreshes) is not activity, and neither is an open live stream (runs/stream.py is cut
    once the timeout passes, see `_session_still_signed_in`); a background request after the timeout sends the
    whole page to sign in."""

    KEY = "last_request_at"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = int(time.time())
            limit = settings.SESSION_IDLE_TIMEOUT_SECONDS
            seen = request.session.get(self.KEY)
            if seen is not None and now - seen > limit:
                request.audit_sign_out_reason = "session.idle_timeout"
                logout(request)
                messages.info(request, f"You were signed out after {_duration(limit)} without activity.")
                if _is_htmx(request):  # also for /api/ fragments (the banner), which LoginRequired skips
                    return _whole_page_to_sign_in(request, settings.LOGIN_URL)
            elif seen is None or (
                request.headers.get(BACKGROUND_HEADER) != "true"
                and now - seen >= min(60, max(limit // 10, 1))
            ):
                request.session[self.KEY] = now
        response = self.get_response(request)
        # A request that signed in starts the clock: else the first request after it, however late, only
        # started it, and a live stream opened first was never cut for idleness.
        # (A session's own sign-in only: a bearer token's request must not make a session.)
        if SESSION_KEY in request.session and self.KEY not in request.session:
            request.session[self.KEY] = int(time.time())
        return response


def _duration(seconds: int) -> str:
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"


LAST_USED_RESOLUTION = timedelta(minutes=1)


class BearerTokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        row = next(iter(_token_read(hash_token(token))), None)
        if row is None or not row.user.is_active:
            return None
        held_perms(row, row.user)
        if refusal := row.refusal():  # expired or revoked: the 401 says which
            request.token_refusal = refusal
            return None
        request.user = row.user
        # Once a minute is news enough; a write per call would queue every polling client behind the
        # SQLite write lock the runners use.
        now = timezone.now()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
            # As often as the last use is written: a trail of which token was used when, from where.
            audit.record(request if isinstance(request, HttpRequest) else row.user, "token.used", row)
        return row.user


class ActiveSessionAuth(SessionAuth):
    """Django's session, for the clinician's browser; unsafe methods need the CSRF token as usual."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_active:
            return user
        return None


# Bearer first: the session check enforces CSRF on unsafe methods and would refuse a token client's POST
# before the token was ever looked at.
api_auth = [BearerTokenAuth(), ActiveSessionAuth()]


def docs_access(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The API docs and schema: for a signed-in user or a token client; a browser is sent to sign in."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if any(auth(request) for auth in api_auth):
            return view(request, *args, **kwargs)
        return redirect_to_login(request.get_full_path())

    return guarded


class BearerTokenMiddleware(BaseMiddleware):
    """For channels consumers (the live stream), inside channels' AuthMiddlewareStack: a request its session
    did not sign in is signed in by `Authorization: Bearer <token>`, with the JSON API's own token check.
    Either way the scope gets `sign_in_check` (below), which a consumer that stays open asks again."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        user = scope.get("user")
        if user is not None and user.is_authenticated and scope.get("session") is not None:
            key = scope["session"].session_key
            scope["sign_in_check"] = partial(_session_still_signed_in, key, user.pk)
            scope["sign_in_ref"] = (SESSION, key)
        else:
            scheme, _, token = _header(scope, b"authorization").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                request = ASGIRequest({**scope, "path": scope.get("path", "/")}, io.BytesIO())
                # Django's own thread for sync work, as `request.auser()` uses; channels' database_sync_to_async
                # would close the connection after every call (a new connection per stream on PostgreSQL).
                found = await sync_to_async(BearerTokenAuth().authenticate)(request, token.strip())
                if found is not None:
                    scope["user"] = found
                    scope["sign_in_check"] = partial(_token_still_valid, hash_token(token.strip()))
                    scope["sign_in_ref"] = (TOKEN, hash_token(token.strip()))
        return await self.inner(scope, receive, send)


# How often an open stream looks again at what signed it in, at most (its idle deadline, a user made
# inactive). A sign-out or a revoked token is seen sooner: `sign_ins_ended`, every SSE_SIGN_OUT_SECONDS.
STREAM_RECHECK_SECONDS = 60.0

# What signed a stream in, as `scope["sign_in_ref"]`: (SESSION, session key) or (TOKEN, token hash).
SESSION, TOKEN = "session", "token"


def sign_ins_ended(refs: set[tuple[str, str | None]]) -> set[tuple[str, str | None]]:
    """Of the `sign_in_ref`s of a process's open streams, those that no longer sign anyone in: a session
    signed out, flushed or expired (its row is gone), a token revoked, expired or deleted. Two queries for
    any number of streams (the database session engine; another engine asks per session). A user made
    inactive or out of the run's reach is the watch's other look (runs.access.watchers_lost)."""
    keys = {value for kind, value in refs if kind == SESSION and value}
    hashes = {value for kind, value in refs if kind == TOKEN and value}
    now = timezone.now()
    live: set[tuple[str, str | None]] = set()
    if keys:
        store = import_module(settings.SESSION_ENGINE).SessionStore
        if hasattr(store, "get_model_class"):  # db and cached_db: the rows say it
            rows = store.get_model_class().objects.filter(session_key__in=keys, expire_date__gt=now)
            live |= {(SESSION, key) for key in rows.values_list("session_key", flat=True)}
        else:
            live |= {(SESSION, key) for key in keys if store().exists(key)}
    if hashes:
        rows = ApiToken.objects.filter(token_hash__in=hashes, revoked_at__isnull=True, expires_at__gt=now)
        live |= {(TOKEN, value) for value in rows.values_list("token_hash", flat=True)}
    return set(refs) - live


def _session_still_signed_in(session_key: str | None, user_pk: int) -> tuple[str | None, float]:
    """`sign_in_check` for a session: (why it no longer signs the stream in, or None; seconds until the next
    look). The idle deadline is the session's last real request plus the timeout; a stream is no request."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load() if session_key else {}  # {} once signed out, flushed or past SESSION_COOKIE_AGE
    if str(data.get(SESSION_KEY)) != str(user_pk) or not _active(user_pk):
        return "You are signed out.", 0.0
    seen, limit = data.get(IdleTimeoutMiddleware.KEY), settings.SESSION_IDLE_TIMEOUT_SECONDS
    wait = _recheck_interval()
    if seen is not None:
        left = seen + limit - time.time()
        if left < 0:
            return f"You were signed out after {_duration(limit)} without activity.", 0.0
        wait = min(wait, left + 1)  # just past the deadline, where the middleware signs the session out too
    return None, max(wait, 0.5)


def _token_still_valid(token_hash: str) -> tuple[str | None, float]:
    """`sign_in_check` for a bearer token: revoked, expired or its user made inactive ends the stream."""
    row = ApiToken.objects.select_related("user").filter(token_hash=token_hash).first()
    if row is None or not row.user.is_active:
        return "The API token is no longer valid.", 0.0
    if refusal := row.refusal():
        return refusal, 0.0
    wait = min(_recheck_interval(), (row.expires_at - timezone.now()).total_seconds() + 1)
    return None, max(wait, 0.5)


def _recheck_interval() -> float:
    # Spread out, so the streams that opened together (a page reload, a benchmark) do not all look at once.
    return STREAM_RECHECK_SECONDS * random.uniform(0.75, 1.0)


def _active(user_pk: int) -> bool:
    return get_user_model().objects.filter(pk=user_pk, is_active=True).exists()


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
