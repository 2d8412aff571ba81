"""The live stream of a run: `GET /api/runs/<id>/stream`, Server-Sent Events read from the RunEvent table.

The runner is another process, so the database is the bus. Each server process has ONE reader (the hub) that
asks the database for new events every SSE_POLL_SECONDS while at least one stream is open, and hands each
event, encoded once, to the queues of the streams watching that run. An idle stream costs a parked coroutine
and a keep-alive comment now and then; no stream touches the database after it has caught up.

Order of a connection:
1. subscribe to the hub (its watermark W is fixed before we read anything, so every event after W reaches us),
2. a fresh connection gets a `snapshot` (its `id:` is the newest event it covers); a reconnection with
   `Last-Event-ID` (header, or `?last_event_id=` for clients that cannot set headers) gets the events after
   that id from the table instead,
3. then the live events from the queue, skipping ids already sent, so the hand-over has no gap and no repeat,
4. a final `end` event once the run is finished (complete, failed, needs_auth, interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from qeeg_site.auth import BearerTokenAuth
from runs import events
from runs.models import Run, RunEvent
from runs.selectors import run_progress

log = logging.getLogger(__name__)

FINISHED = {str(status) for status in Run.FINISHED}
# A stream whose client reads slower than events arrive is dropped rather than buffered without bound; its
# EventSource reconnects with Last-Event-ID and loses nothing.
QUEUE_LIMIT = 2000
FETCH_BATCH = 1000


@dataclass(frozen=True)
class Message:
    id: int
    kind: str
    frame: bytes
    finishes_run: bool


@dataclass(eq=False)
class Subscription:
    run_id: int
    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    overflowed: bool = False


def encode(kind: str, event_id: int | None, payload: Any) -> bytes:
    # json.dumps escapes newlines, so the payload is always one `data:` line.
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(payload, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def event_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "run_id": row["run_id"],
        "kind": row["kind"],
        "stage": row["stage"],
        "model_id": row["model_id"],
        "data": row["data"],
        "at": row["created_at"].isoformat() if row["created_at"] else None,
    }


def message_from_row(row: dict[str, Any]) -> Message:
    finishes = row["kind"] == events.STATUS and (row["data"] or {}).get("status") in FINISHED
    return Message(
        id=row["id"],
        kind=row["kind"],
        frame=encode(row["kind"], row["id"], event_payload(row)),
        finishes_run=finishes,
    )


EVENT_FIELDS = ("id", "run_id", "kind", "stage", "model_id", "data", "created_at")


# The stream's reads run on one thread of their own, so they never queue behind a slow synchronous view on
# Django's shared thread, and that thread keeps one database connection open instead of reconnecting per poll.
_reader_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-events")


def _db(fn):
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connection.close()  # reconnect on the next call rather than reuse a broken connection
            raise

    return sync_to_async(call, thread_sensitive=False, executor=_reader_thread)


@_db
def _max_event_id() -> int:
    return RunEvent.objects.aggregate(top=Max("id"))["top"] or 0


@_db
def _events_after(last_id: int, run_id: int | None = None, limit: int = FETCH_BATCH) -> list[dict[str, Any]]:
    rows = RunEvent.objects.filter(id__gt=last_id)
    if run_id is not None:
        rows = rows.filter(run_id=run_id)
    return list(rows.order_by("id").values(*EVENT_FIELDS)[:limit])


class EventHub:
    """The one reader of new run events in this process (per event loop), shared by every open stream."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.watermark = 0
        self.polls = 0  # how many times the table was asked, for tests and the benchmark

    @property
    def open_streams(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    async def subscribe(self, run_id: int) -> Subscription:
        sub = Subscription(run_id=run_id, queue=asyncio.Queue(maxsize=QUEUE_LIMIT))
        self._subscribers.setdefault(run_id, set()).add(sub)
        if self._task is None:
            self._ready.clear()
            self._task = asyncio.get_running_loop().create_task(self._read(), name="run-event-hub")
        await self._ready.wait()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.run_id]

    async def _read(self) -> None:
        try:
            self.watermark = await _max_event_id()
        except Exception:
            log.exception("live stream: could not read the run-event table")
            self.watermark = 0
        self._ready.set()
        loop = asyncio.get_running_loop()
        next_stale_check = loop.time()
        while True:
            await asyncio.sleep(settings.SSE_POLL_SECONDS)
            if not self._subscribers:
                # Nobody listens: stop asking the database. Checked and cleared with no await in between, so a
                # subscribe() arriving now starts a fresh reader.
                self._task = None
                return
            try:
                if loop.time() >= next_stale_check:
                    # A runner killed without a word writes no final event; while someone watches, find it
                    # (one query) so its run turns interrupted and the watchers get the status and the end.
                    next_stale_check = loop.time() + max(settings.RUN_STALE_SECONDS / 3, 1.0)
                    await _mark_stale_runs()
                await self._poll()
            except Exception:
                log.exception("live stream: reading run events failed; retrying")

    async def _poll(self) -> None:
        while True:
            self.polls += 1
            rows = await _events_after(self.watermark)
            for row in rows:
                self.watermark = row["id"]
                subs = self._subscribers.get(row["run_id"])
                if not subs:
                    continue
                message = message_from_row(row)
                for sub in list(subs):
                    try:
                        sub.queue.put_nowait(message)
                    except asyncio.QueueFull:
                        sub.overflowed = True
            if len(rows) < FETCH_BATCH:
                return


@_db
def _mark_stale_runs() -> int:
    from runs.services import runs_mark_stale_interrupted

    return runs_mark_stale_interrupted()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub] = weakref.WeakKeyDictionary()


def get_hub() -> EventHub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub()
    return hub


@_db
def _snapshot(run_id: int) -> tuple[int, dict[str, Any]]:
    # The id is read first, so everything up to it is in the state below; later events follow as events.
    covered = RunEvent.objects.filter(run_id=run_id).aggregate(top=Max("id"))["top"] or 0
    run = Run.objects.get(pk=run_id)
    return covered, {"run_id": run.pk, **run_state(run)}


def run_state(run: Run) -> dict[str, Any]:
    return {
        "status": run.status,
        "current_stage": run.current_stage,
        "error": run.error,
        "finished": run.status in FINISHED,
        "progress": run_progress(run),
    }


@_db
def _run_status(run_id: int) -> str | None:
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


async def _authenticated(request: HttpRequest) -> bool:
    """A signed-in session or a bearer token, checked with the JSON API's own token auth. (The API tries the
    token first only so CSRF never refuses a token client's POST; this view is GET-only.)"""
    user = await request.auser()
    if user.is_authenticated and user.is_active:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return await sync_to_async(BearerTokenAuth().authenticate)(request, token.strip()) is not None


def _last_event_id(request: HttpRequest) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    try:
        return max(int(raw.strip()), 0)
    except ValueError:
        return None


async def event_stream(run_id: int, last_event_id: int | None) -> AsyncIterator[bytes]:
    hub = get_hub()
    sub = await hub.subscribe(run_id)
    keepalive = settings.SSE_KEEPALIVE_SECONDS
    try:
        # Reconnect after 2 s if the connection drops; the browser sends Last-Event-ID by itself.
        yield b"retry: 2000\n\n"
        if last_event_id is None:
            sent, state = await _snapshot(run_id)
            yield encode("snapshot", sent, state)
            finished = state["finished"]
        else:
            sent, finished = last_event_id, False
            while True:
                rows = await _events_after(sent, run_id)
                for row in rows:
                    message = message_from_row(row)
                    finished = finished or message.finishes_run
                    sent = message.id
                    yield message.frame
                if len(rows) < FETCH_BATCH:
                    break
            if not finished:
                finished = (await _run_status(run_id)) in FINISHED
        if finished:
            # Whatever was written between our reads and the finish, then the end.
            for row in await _events_after(sent, run_id):
                sent = row["id"]
                yield message_from_row(row).frame
            yield encode("end", sent, {"run_id": run_id})
            return
        while True:
            if sub.overflowed:
                log.warning("live stream for run %s fell behind; closing it so the client resumes", run_id)
                return
            try:
                message = await asyncio.wait_for(sub.queue.get(), timeout=keepalive)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if message.id <= sent:
                continue
            sent = message.id
            yield message.frame
            if message.finishes_run:
                yield encode("end", sent, {"run_id": run_id})
                return
    finally:
        hub.unsubscribe(sub)


@require_GET
async def run_stream(request: HttpRequest, run_id: int) -> HttpResponse:
    """`text/event-stream` of one run's events. A plain async Django view (not a ninja operation) because it
    must stream from the event loop and authenticate without touching the ORM synchronously."""
    if not await _authenticated(request):
        return JsonResponse({"detail": "Sign in, or send Authorization: Bearer <token>."}, status=401)
    if not await Run.objects.filter(pk=run_id).aexists():
        return JsonResponse({"detail": f"Run {run_id} not found."}, status=404)
    response = StreamingHttpResponse(
        event_stream(run_id, _last_event_id(request)), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a reverse proxy must not hold the events back
    return response


async def close_all_streams_for_tests() -> None:
    """Stop this loop's reader (tests run many event loops in one process)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None and hub._task is not None:
        hub._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hub._task
