"""Refusals from the request line and headers alone, before a byte of the body is read.

A request is refused when its Content-Length passes REQUEST_MAX_BYTES (413), or when it would change
something (not GET/HEAD/OPTIONS, not the sign-in form) and carries no session cookie and no bearer token
(401 for the API, 403 for pages). Two places apply the same rules:

- `RequestGuard`, the ASGI wrapper around the whole application (qeeg_site/asgi.py), for any ASGI server;
  it also checks that the session or token is a live one (a database look-up) before the app runs.
- daphne itself. Twisted reads a whole request body (to a temporary file past 100 kB) before daphne hands
  the request to the application, and daphne then queues all of it in memory at once, so no ASGI app can
  stop a 300 MB body from costing the server its size in RAM. `EarlyRefusingRequest` replaces daphne's
  request class: the moment the headers are in, it answers a refused request itself, reads (and drops) at
  most REQUEST_MAX_BYTES of the body and closes; the body is never stored. A write past CHECKED_BODY_BYTES
  that passed on a cookie or token present has them looked up (in a thread) once its body is in, on disk,
  before daphne reads it into memory: a made-up cookie costs disk for a moment, never the body's size in RAM.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from html import escape
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Under daphne, a write with a body past this (or of unknown length) has its credentials looked up before
# the body is read into memory; a smaller one is looked up by the wrapper, as every write is.
CHECKED_BODY_BYTES = 1024 * 1024
# Posted to by people who are not signed in yet, by nature.
ANONYMOUS_POSTS = frozenset({"/login/", "/admin/login/"})


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str
    api: bool

    @property
    def reason(self) -> str:
        return {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 413: "Content Too Large"}[
            self.status
        ]

    @property
    def content_type(self) -> bytes:
        return b"application/json" if self.api else b"text/html; charset=utf-8"

    @property
    def body(self) -> bytes:
        if self.api:
            return json.dumps({"detail": self.detail}).encode()
        return (
            f"<!doctype html><title>{self.reason}</title><h1>{self.reason}</h1><p>{escape(self.detail)}</p>"
        ).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]


def _is_api(path: str) -> bool:
    return path.startswith("/api/")


def needs_credentials(method: str, path: str) -> bool:
    return method.upper() not in SAFE_METHODS and path not in ANONYMOUS_POSTS


def _signed_out(path: str) -> Refusal:
    if _is_api(path):
        return Refusal(401, "Sign in, or send Authorization: Bearer <token>.", api=True)
    return Refusal(
        403, "You are not signed in (or your session has ended): sign in and try again.", api=False
    )


def too_large(length: int, path: str) -> Refusal:
    limit = settings.REQUEST_MAX_BYTES
    return Refusal(
        413,
        f"This request carries {length / 1_048_576:.1f} MB or more; one request may carry at most "
        f"{limit / 1_048_576:.1f} MB (REQUEST_MAX_BYTES). Upload fewer or smaller files at a time.",
        api=_is_api(path),
    )


def refusal_from_headers(
    method: str, path: str, *, content_length: str | None, cookies: Iterable[str], authorization: str
) -> Refusal | None:
    """The refusal the request line and headers call for, or None. Looks at nothing but its arguments."""
    if content_length is not None:
        try:
            length = int(content_length)
        except ValueError:
            return Refusal(400, "The Content-Length header is not a number.", api=_is_api(path))
        if length > settings.REQUEST_MAX_BYTES:
            return too_large(length, path)
    if not needs_credentials(method, path):
        return None
    has_session = settings.SESSION_COOKIE_NAME in cookies
    has_token = authorization.lower().startswith("bearer ") and authorization[7:].strip() != ""
    return None if has_session or has_token else _signed_out(path)


# -- the ASGI wrapper -----------------------------------------------------------------------------------------


def _headers(scope: dict[str, Any]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", []):
        found.setdefault(key.lower(), value.decode("latin-1"))
    return found


def _cookies(header: str) -> dict[str, str]:
    cookies = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            cookies[name] = value
    return cookies


def _credentials_live(session_key: str | None, authorization: str) -> bool:
    """A session that holds a signed-in user, or a bearer token the API accepts (its own check)."""
    import io
    from importlib import import_module

    from django.contrib.auth import SESSION_KEY
    from django.core.handlers.asgi import ASGIRequest

    from qeeg_site.auth import BearerTokenAuth

    if session_key:
        # The same look-up Django's session middleware makes; an expired or unknown key holds no user.
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        if store.get(SESSION_KEY) is not None:
            return True
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        request = ASGIRequest({"type": "http", "method": "POST", "path": "/", "headers": []}, io.BytesIO())
        return BearerTokenAuth().authenticate(request, token.strip()) is not None
    return False


def _credentials_live_closing(session_key: str | None, authorization: str) -> bool:
    """`_credentials_live` from one of Twisted's threads, which Django does not close connections for."""
    from django.db import connections

    try:
        return _credentials_live(session_key, authorization)
    finally:
        connections.close_all()


class RequestGuard:
    """ASGI wrapper: refuses from the headers (and one credential look-up) without reading the body."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        headers = _headers(scope)
        cookies = _cookies(headers.get(b"cookie", ""))
        authorization = headers.get(b"authorization", "")
        refusal = refusal_from_headers(
            method,
            path,
            content_length=headers.get(b"content-length"),
            cookies=cookies,
            authorization=authorization,
        )
        if refusal is None and needs_credentials(method, path):
            live = await sync_to_async(_credentials_live)(
                cookies.get(settings.SESSION_COOKIE_NAME), authorization
            )
            if not live:
                refusal = _signed_out(path)
        if refusal is None:
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": refusal.status, "headers": refusal.headers()})
        await send({"type": "http.response.body", "body": refusal.body})


# -- daphne ---------------------------------------------------------------------------------------------------


def install_in_daphne() -> None:
    """Make daphne build `EarlyRefusingRequest`s (its factory looks the class up per connection)."""
    from daphne import http_protocol
    from twisted.internet import threads

    if getattr(http_protocol.WebRequest, "refuses_early", False):
        return
    base = http_protocol.WebRequest

    class EarlyRefusingRequest(base):
        refuses_early = True
        refusal: Refusal | None = None
        dropped = 0
        # (session key, authorization) of a large write whose credentials are yet to be looked up.
        unchecked: tuple[str | None, str] | None = None

        def gotLength(self, length: int | None) -> None:
            channel = self.channel
            method = channel._command.decode("latin-1")
            path = channel._path.split(b"?", 1)[0].decode("latin-1")
            header = self.requestHeaders.getRawHeaders
            self.refusal = refusal_from_headers(
                method,
                path,
                content_length=(header(b"content-length") or [None])[0],
                cookies={name.decode("latin-1") for name in self.received_cookies},
                authorization=(header(b"authorization") or [b""])[0].decode("latin-1"),
            )
            if self.refusal is None:
                if needs_credentials(method, path) and (length is None or length > CHECKED_BODY_BYTES):
                    cookie = self.received_cookies.get(settings.SESSION_COOKIE_NAME.encode())
                    self.unchecked = (
                        cookie.decode("latin-1") if cookie else None,
                        (header(b"authorization") or [b""])[0].decode("latin-1"),
                    )
                return super().gotLength(length)
            self.requestHeaders.removeHeader(b"expect")  # no "100 Continue": we do not want the body
            self.content = _Drop()
            self._answer(self.refusal)

        def handleContentChunk(self, data: bytes) -> None:
            if self.refusal is None:
                length = self.content.tell() + len(data)
                if length > settings.REQUEST_MAX_BYTES:  # a body sent without Content-Length
                    self.refusal = too_large(length, self.channel._path.decode("latin-1"))
                    self.content.close()
                    self.content = _Drop()
                    self._answer(self.refusal)
                    return
                return super().handleContentChunk(data)
            # Read and dropped, so a browser still sending sees our answer rather than a reset connection.
            self.dropped += len(data)
            if self.dropped > settings.REQUEST_MAX_BYTES:
                self.channel.transport.abortConnection()

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            if self.refusal is not None:
                self.channel.transport.loseConnection()
                return
            if self.unchecked is None:
                return super().requestReceived(command, path, version)

            # A large body is in (on disk past 100 kB) and daphne would now read all of it into memory for
            # the application, whose look-up may refuse it: a made-up cookie must not cost its size in RAM.
            # The same look-up first, in a thread; the request waits.
            def decided(live: bool) -> None:
                if self.channel is None or getattr(self, "_disconnected", False):
                    return  # the client hung up while it was looked up
                if live:
                    base.requestReceived(self, command, path, version)
                    return
                self.refusal = _signed_out(path.split(b"?", 1)[0].decode("latin-1"))
                self.content.close()
                self._answer(self.refusal)
                self.channel.transport.loseConnection()

            looked_up = threads.deferToThread(_credentials_live_closing, *self.unchecked)
            # A look-up that failed: the application decides (the wrapper looks again).
            looked_up.addCallbacks(decided, lambda failure: decided(True))

        def _answer(self, refusal: Refusal) -> None:
            lines = [b"HTTP/1.1 %d %s" % (refusal.status, refusal.reason.encode())]
            lines += [name + b": " + value for name, value in refusal.headers()]
            self.channel.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + refusal.body)

    http_protocol.WebRequest = EarlyRefusingRequest


class _Drop:
    """Where a refused request's body goes: nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def tell(self) -> int:
        return 0

    def seek(self, *args: Any) -> None:
        pass

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


def guard(app: Callable[..., Awaitable[None]]) -> RequestGuard:
    """The application, guarded; under daphne, refused requests are also answered before their body."""
    with contextlib.suppress(ImportError):  # without daphne, the wrapper alone applies
        install_in_daphne()
    return RequestGuard(app)
