"""The live stream of a run: `GET /api/runs/<id>/stream`, Server-Sent Events, as a channels consumer.

Routed by channels in qeeg_site/asgi.py (`urlpatterns` below) behind its session auth and the API's bearer
tokens. Every stream of a run is in the run's channel-layer group, which this process's one feed
(runs/feed.py) fills with the run's new events, each encoded once.

Order of a connection:
1. count in with the feed (from then on every newly committed event reaches the group) and join the group,
2. a fresh connection gets a `snapshot` (its `id:` is the newest event it covers); a reconnection with
   `Last-Event-ID` (header, or `?last_event_id=` for clients that cannot set headers) gets the events after
   that id from the table instead,
3. then the live events from the group, skipping ids already sent, and reading from the table whatever the
   group did not bring (the feed says which event came before each), so there is no gap and no repeat,
4. `: keepalive` comments while idle, and a final `end` event once the run is finished (complete, failed,
   needs_auth, interrupted);
5. or a final `signed_out` event (`{"run_id", "detail"}`) once what signed the stream in no longer does, or
   its user may no longer watch the run: the session's idle timeout passed (a stream is not activity), the
   user signed out, the token was revoked or expired, the user was made inactive, taken off the patient's
   clinicians or out of a role that reads runs. The scope's `sign_in_check` (qeeg_site/auth.py) and then
   `stream_refusal` (the run's access rule) say when; they are asked at the start, just after each deadline,
   at least every minute, and at once when the process's `SignInWatch` (one look at the database every
   SSE_SIGN_OUT_SECONDS for all its streams) finds the stream's session or token gone or its user's access
   lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404
from django.urls import URLPattern, path, reverse

from audit.services import Asked, origin_of_scope, serving
from qeeg_site.auth import sign_ins_ended
from qeeg_site.socket_writes import BODY_NOW, BodyNow
from runs import feed
from runs.access import run_for, watchers_lost

log = logging.getLogger(__name__)

SIGN_IN = "Sign in, or send Authorization: Bearer <token>."
STREAM_HEADERS = [
    (b"Content-Type", b"text/event-stream; charset=utf-8"),
    (b"Cache-Control", b"no-cache, no-store, private"),  # patient data: never kept by a cache
    (b"X-Accel-Buffering", b"no"),  # a reverse proxy must not hold the events back
]
STREAM_PATH = "api/runs/<int:run_id>/stream"


# The scope's `sign_in_check`: (why the stream is no longer signed in, or None; seconds until asking again).
SignInCheck = Callable[[], tuple[str | None, float]]


def stream_refusal(user: Any, run_id: int, asked: Asked | None = None) -> tuple[int, str] | None:
    """Who may watch a run's live stream: None if `user` may, else the HTTP status and the reason. The rule is
    runs.access.run_for, the same as the run's page and API (it runs on the stream's reader thread, so the ORM is fine).
    A refusal at the opening (`asked`: from where) is audited as the page's would be; re-checks are not."""
    if user is None or not user.is_authenticated or not user.is_active:
        return 401, SIGN_IN
    try:
        with serving(asked):
            run_for(user, run_id)
    except Http404 as exc:
        return 404, str(exc)
    except PermissionDenied as exc:
        return 403, str(exc)
    return None


def _opening(
    user: Any, run_id: int, check: SignInCheck | None, asked: Asked | None = None
) -> tuple[tuple[int, str] | None, float, Any]:
    """stream_refusal, after the sign-in check (a session past its idle timeout is signed out already), when
    to ask the check again, and the user's id."""
    wait = 0.0
    if check is not None:
        ended, wait = check()
        if ended:
            return (401, f"{ended} {SIGN_IN}"), 0.0, None
    return stream_refusal(user, run_id, asked), wait, getattr(user, "pk", None)


def _still_watching(check: SignInCheck, user_pk: Any, run_id: int, nudged: bool) -> tuple[str | None, float]:
    """A stream's recheck: `check` (the sign-in), then, when the watch nudged it (its look found the user's
    access lost, or the sign-in gone), the run's access rule for the user as the database has them now (made
    inactive, off the patient's clinicians, out of the role): why the stream ends, or None; seconds until
    asking again. Not nudged, the access rule is not asked: the watch's one look covers it."""
    ended, wait = check()
    if ended or not nudged:
        return ended, wait
    refusal = stream_refusal(get_user_model().objects.filter(pk=user_pk).first(), run_id)
    if refusal is None:
        return None, wait
    return (
        "You are signed out." if refusal[0] == 401 else f"You no longer have access to run {run_id}."
    ), 0.0


class Watched(NamedTuple):
    """What the watch looks at for one stream: its sign-in (`scope["sign_in_ref"]`), its user and run."""

    ref: tuple[str, str | None]
    user_pk: Any
    run_id: int


def watched_ended(streams: set[Watched]) -> set[Watched]:
    """The watch's one look: of these streams, those whose session or token is gone (two queries) or whose
    user may no longer watch the run (runs.access.watchers_lost: four), however many streams."""
    ended = sign_ins_ended({w.ref for w in streams})
    lost = watchers_lost({(w.user_pk, w.run_id) for w in streams})
    return {w for w in streams if w.ref in ended or (w.user_pk, w.run_id) in lost}


class SignInWatch:
    """One per process: while streams are open, every SSE_SIGN_OUT_SECONDS one look at the database
    (`watched_ended`: six queries, however many streams) for the sessions and tokens that signed them in and
    their users' access to their runs; each stream whose session or token is gone, or whose user is inactive
    or lost the run, is nudged to ask its own checks at once. So a sign-out in another tab, on another web
    process or host, or a change in the admin ends the stream within seconds, and a process with a thousand
    streams asks six times per period rather than thousands."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.streams: dict[asyncio.Event, Watched] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, watched: Watched) -> asyncio.Event:
        nudge = asyncio.Event()
        self.streams[nudge] = watched
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._look())
        return nudge

    def remove(self, nudge: asyncio.Event) -> None:
        self.streams.pop(nudge, None)
        if not self.streams and self.task is not None:
            self.task.cancel()  # nothing left to watch: no task outlives the last stream
            self.task = None

    async def _look(self) -> None:
        while self.streams:
            await asyncio.sleep(settings.SSE_SIGN_OUT_SECONDS)
            watched = dict(self.streams)
            try:
                ended = await feed.on_reader_thread(watched_ended)(set(watched.values()))
            except DatabaseError:
                log.warning("the streams' sign-in look failed; trying again")
                continue
            for nudge, stream in watched.items():
                if stream in ended:
                    nudge.set()


_watch: SignInWatch | None = None


def sign_in_watch() -> SignInWatch:
    global _watch
    if _watch is None or _watch.loop is not asyncio.get_running_loop():  # tests run a loop each
        _watch = SignInWatch()
    return _watch


def last_event_id(scope: dict[str, Any]) -> int | None:
    raw = None
    for name, value in scope.get("headers", []):
        if name.lower() == b"last-event-id":
            raw = value.decode("latin-1")
    if not raw:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        raw = (query.get("last_event_id") or [None])[0]
    if raw is None or raw.strip() == "":
        return None
    try:
        return max(int(raw.strip()), 0)
    except ValueError:
        return None


class RunStreamConsumer(AsyncHttpConsumer):
    sent = 0
    run_id: int | None = None
    _batch: list[bytes] | None = None  # frames of the write being gathered (`_one_write`)
    _body_now: BodyNow | None = (
        None  # daphne's direct body write (qeeg_site/socket_writes.py), if it gives one
    )
    watching = False
    _keepalive: asyncio.Task[None] | None = None
    _sign_in_watch: asyncio.Task[None] | None = None

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._leave()  # also when the server cancels us

    async def http_request(self, message: dict[str, Any]) -> None:
        # channels' default ends the response when handle() returns; a stream goes on until `end` or until the
        # client leaves (http.disconnect).
        if not message.get("more_body"):
            await self.handle(b"")

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels closes stale database connections before every message through Django's one sync thread: a
        # thread switch per event per stream. This consumer never uses the ORM on the event loop (the feed's
        # reads run on its own thread), so it dispatches directly.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"no handler for {message['type']}")
        try:
            await handler(message)
        finally:
            if message["type"].startswith("run."):  # from our channel: the layer may hand events over again
                self.channel_layer.handled(self.channel_name)

    async def handle(self, body: bytes) -> None:
        if self.scope["method"] not in ("GET", "HEAD"):
            await self._refuse(405, "Only GET or HEAD.", ((b"Allow", b"GET, HEAD"),))
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        check = self.scope.get("sign_in_check")
        refusal, recheck_in, user_pk = await feed.on_reader_thread(_opening)(
            self.scope.get("user"), run_id, check, Asked(origin_of_scope(self.scope), f"GET /{STREAM_PATH}")
        )
        if refusal is not None:
            await self._refuse(*refusal)
        if self.scope["method"] == "HEAD":  # what a GET would open with, and no stream
            await self.send_headers(headers=STREAM_HEADERS)
            await self.send_body(b"")
            raise StopConsumer
        self.run_id, self.feed = run_id, feed.get_feed()
        await self.feed.watch(run_id)
        self.watching = True
        await self.channel_layer.group_add(feed.run_group(run_id), self.channel_name)
        await self.send_headers(headers=STREAM_HEADERS)
        async with self._one_write():
            # Reconnect after 2 s if the connection drops; the browser sends Last-Event-ID by itself.
            await self._send(b"retry: 2000\n\n")
            resume_after = last_event_id(self.scope)
            if resume_after is None:
                self.sent, state = await feed.snapshot(run_id)
                await self._send(feed.encode("snapshot", self.sent, state))
                finished = state["finished"]
            else:
                self.sent = resume_after
                finished = await self._send_backlog()
                finished = finished or (await feed.run_status(run_id)) in feed.FINISHED
            if finished:
                await self._send_backlog()  # whatever was written between our reads and the finish
                await self._end()
        self._body_now = self.scope.get("extensions", {}).get(BODY_NOW)
        if self._body_now is not None:  # under daphne: the feed's loop writes our events itself (`_take`)
            self.channel_layer.take_now(self.channel_name, self._take)
        loop = asyncio.get_running_loop()
        self._keepalive = loop.create_task(self._keep_alive())
        if check is not None:
            self._sign_in_watch = loop.create_task(
                self._watch_sign_in(check, recheck_in, self.scope.get("sign_in_ref"), user_pk)
            )

    async def run_event(self, message: dict[str, Any]) -> None:
        # This event and the run's events already waiting behind it (a stream that fell behind): one write.
        waiting = self.channel_layer.take_waiting(self.channel_name, "run.event")
        if not waiting:  # keeping up: the usual case, as it was
            await self._event(message)
            return
        async with self._one_write():
            for event in (message, *waiting):
                await self._event(event)

    def _take(self, message: dict[str, Any]) -> bool:
        """The layer's hand-over of a group message while nothing waits in our channel (runs/feed.py): a live
        event we are due is written to the socket here, in the feed's loop, as `_event` would send it; True
        if it is done with (sent now or before), False to have it queued for `run_event` (the run's end,
        an event after one we missed, a write under way, a connection gone)."""
        if message["type"] != "run.event" or message["finishes"] or self._batch is not None:
            return False
        if message["prev"] is not None and message["prev"] > self.sent:
            return False  # one is missing before it: `_event` reads the table first
        if message["id"] <= self.sent:
            return True
        if not self._body_now(message["frame"]):
            return False
        self.sent = message["id"]
        self._last_write = asyncio.get_running_loop().time()
        return True

    async def _event(self, message: dict[str, Any]) -> None:
        missed = message["prev"] is not None and message["prev"] > self.sent
        # If the group did not bring us the run's previous event, read everything after ours from the table.
        if missed and await self._send_backlog():
            await self._end()
        if message["id"] <= self.sent:
            return
        self.sent = message["id"]
        await self._send(message["frame"])
        if message["finishes"]:
            await self._end()

    async def run_catch_up(self, message: dict[str, Any]) -> None:
        if await self._send_backlog():
            await self._end()

    async def run_signed_out(self, message: dict[str, Any]) -> None:
        """From `_watch_sign_in`, through our own channel, so the stream ends here, in the consumer's loop."""
        await self._send(
            feed.encode("signed_out", self.sent, {"run_id": self.run_id, "detail": message["detail"]})
        )
        await self.send_body(b"")
        await self._leave()
        raise StopConsumer

    async def disconnect(self) -> None:
        await self._leave()

    async def _send_backlog(self) -> bool:
        """Send the run's events after the last one sent, from the table; True if one finished the run."""
        finished = False
        while True:
            rows = await feed.events_after(self.sent, self.run_id)
            async with self._one_write():
                for row in rows:
                    self.sent = row["id"]
                    await self._send(feed.event_frame(row))
                    finished = finished or feed.finishes_run(row)
            if len(rows) < feed.FETCH_BATCH:
                return finished

    async def _send(self, chunk: bytes) -> None:
        self._last_write = asyncio.get_running_loop().time()
        if self._batch is not None:
            self._batch.append(chunk)
        else:
            await self._write(chunk)

    async def _write(self, body: bytes) -> None:
        # Under daphne, straight to the socket as the feed's hand-over does (the same order: daphne's own
        # reply would write at once too); else, and once the connection is gone, as an ASGI message.
        if self._body_now is None or not self._body_now(body):
            await self.send_body(body, more_body=True)

    @contextlib.asynccontextmanager
    async def _one_write(self) -> AsyncIterator[None]:
        """What is sent inside goes out as one body message: one write to the socket, not one per frame (the
        server's per-write work, not the bytes, is what a thousand streams pay for). Nested: the outer one
        writes. The frames keep their order."""
        if self._batch is not None:
            yield
            return
        self._batch = []
        try:
            yield
        except BaseException:
            self._batch = None  # the stream is going away; nothing more is written to it
            raise
        await self._flush()

    async def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch:
            await self._write(b"".join(batch))

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        period = settings.SSE_KEEPALIVE_SECONDS
        while True:
            idle = loop.time() - self._last_write
            if idle < period:
                await asyncio.sleep(period - idle)
                continue
            await self._send(b": keepalive\n\n")
            # Renew the membership: the layer forgets members after a day (group_expiry), a run may go on longer.
            await self.channel_layer.group_add(feed.run_group(self.run_id), self.channel_name)

    async def _watch_sign_in(
        self, check: SignInCheck, wait: float, ref: tuple[str, str | None] | None, user_pk: Any
    ) -> None:
        watch = sign_in_watch() if ref is not None else None
        nudge = watch.add(Watched(ref, user_pk, self.run_id)) if watch is not None else asyncio.Event()
        recheck = functools.partial(_still_watching, check, user_pk, self.run_id)
        try:
            await self._sign_in_loop(recheck, wait, nudge)
        finally:
            if watch is not None:
                watch.remove(nudge)

    async def _sign_in_loop(
        self, check: Callable[[bool], tuple[str | None, float]], wait: float, nudge: asyncio.Event
    ) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # its own deadline, or the watch saw it signed out
                await asyncio.wait_for(nudge.wait(), wait)
            nudged = nudge.is_set()
            nudge.clear()
            try:
                ended, wait = await feed.on_reader_thread(check)(nudged)
            except DatabaseError:
                log.warning("run %s stream: the sign-in check failed; trying again in 5 s", self.run_id)
                ended, wait = None, 5.0
            if ended:
                await self.channel_layer.send(self.channel_name, {"type": "run.signed_out", "detail": ended})
                return

    async def _end(self) -> None:
        await self._send(feed.encode("end", self.sent, {"run_id": self.run_id}))
        await self._flush()
        await self.send_body(b"")
        await self._leave()
        raise StopConsumer

    async def _refuse(self, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await self.send_response(status, body, headers=[(b"Content-Type", b"application/json"), *headers])
        raise StopConsumer

    async def _leave(self) -> None:
        for task in (self._keepalive, self._sign_in_watch):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._keepalive = self._sign_in_watch = None
        if self.watching:
            self.watching = False
            self.feed.unwatch(self.run_id)
            await self.channel_layer.group_discard(feed.run_group(self.run_id), self.channel_name)


def routes(wrap: Callable[[Any], Any] = lambda app: app) -> list[URLPattern]:
    """The stream's URL patterns, for channels' URLRouter (qeeg_site/asgi.py wraps them in its auth)."""
    return [path(STREAM_PATH, wrap(RunStreamConsumer.as_asgi()), name="run-stream")]


urlpatterns = routes()  # what `stream_url` reverses against; Django's own URLconf never routes here


def stream_url(run_id: int) -> str:
    return reverse("run-stream", args=[run_id], urlconf=__name__)
