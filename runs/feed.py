"""The one reader of new run events in a web process, feeding the channel layer's groups: one group per run.

The runner is another process (on another host, perhaps), and the `RunEvent` table is the bus. Each web
process (each event loop) has ONE feed, running only while some stream in it is open:

- SQLite: it asks the table for `id > watermark` every SSE_POLL_SECONDS, and at once when the kernel says
  the database was written (`DatabaseWrites`, inotify on Linux) (one writer at a time, so ids are committed
  in id order and a watermark never skips one).
- PostgreSQL: it LISTENs on one connection; every committed event is announced there by `event_emit`
  (`<run_id>:<event_id>`), and the feed reads the announced rows by id. No polling: an idle process asks
  nothing of the database. Rows are read rather than taken from the payload, so an event of any size
  fits, and a run's events commit in id order (`event_emit` holds a per-run lock), so they arrive in order.

Each event is encoded once and group-sent to its run's group with the id of the run's previous event the feed
sent (`prev`), so a stream can tell it missed one (and read it from the table) rather than skip it. The
consumers (runs/stream.py) read their snapshot or backlog from the table themselves and drop ids they sent.
A stream that keeps up is handed the event by a plain call in the group send's loop (`RunStreamLayer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Max

from runs import events
from runs.models import Run, RunEvent
from runs.selectors import run_progress
from runs.services import runs_mark_stale_interrupted

log = logging.getLogger(__name__)

FINISHED = {str(status) for status in Run.FINISHED}
FETCH_BATCH = 1000
EVENT_FIELDS = ("id", "run_id", "kind", "stage", "model_id", "data", "created_at")


def run_group(run_id: int) -> str:
    return f"run-events.{run_id}"


def encode(kind: str, event_id: int | None, payload: Any) -> bytes:
    # json.dumps escapes newlines, so the payload is always one `data:` line.
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(payload, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def event_frame(row: dict[str, Any]) -> bytes:
    return encode(
        row["kind"],
        row["id"],
        {
            "id": row["id"],
            "run_id": row["run_id"],
            "kind": row["kind"],
            "stage": row["stage"],
            "model_id": row["model_id"],
            "data": row["data"],
            "at": row["created_at"].isoformat() if row["created_at"] else None,
        },
    )


def finishes_run(row: dict[str, Any]) -> bool:
    return row["kind"] == events.STATUS and (row["data"] or {}).get("status") in FINISHED


def run_state(run: Run) -> dict[str, Any]:
    return {
        "status": run.status,
        "current_stage": run.current_stage,
        "error": run.error,
        "finished": run.status in FINISHED,
        "progress": run_progress(run),
    }


# Every read of the stream runs on one thread of its own, so it never queues behind a slow synchronous view
# on Django's shared thread, and that thread keeps one database connection open instead of reconnecting.
_reader_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-events")


def on_reader_thread(fn):
    """Run `fn` (ORM work) on the stream's own thread, whose one database connection is kept open."""

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connection.close()  # reconnect on the next call rather than reuse a broken connection
            raise

    return sync_to_async(call, thread_sensitive=False, executor=_reader_thread)


@on_reader_thread
def max_event_id() -> int:
    return RunEvent.objects.aggregate(top=Max("id"))["top"] or 0


@on_reader_thread
def events_after(last_id: int, run_id: int | None = None, limit: int = FETCH_BATCH) -> list[dict[str, Any]]:
    rows = RunEvent.objects.filter(id__gt=last_id)
    if run_id is not None:
        rows = rows.filter(run_id=run_id)
    return list(rows.order_by("id").values(*EVENT_FIELDS)[:limit])


@on_reader_thread
def events_by_id(ids: list[int]) -> list[dict[str, Any]]:
    return list(RunEvent.objects.filter(id__in=ids).order_by("id").values(*EVENT_FIELDS))


@on_reader_thread
def snapshot(run_id: int) -> tuple[int, dict[str, Any]]:
    # The id is read first, so everything up to it is in the state below; later events follow as events.
    covered = RunEvent.objects.filter(run_id=run_id).aggregate(top=Max("id"))["top"] or 0
    run = Run.objects.get(pk=run_id)
    return covered, {"run_id": run.pk, **run_state(run)}


@on_reader_thread
def run_status(run_id: int) -> str | None:
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


@on_reader_thread
def _mark_stale_runs() -> int:
    return runs_mark_stale_interrupted()


CATCH_UP = {"type": "run.catch_up"}


class RunStreamLayer(InMemoryChannelLayer):
    """channels' in-process layer, made linear in the number of streams and unable to lose an event unseen.

    Linear: the stock one sweeps every channel and group for expired entries on each send and receive, makes a
    task per member on each group send, a new queue per message and a deep copy of it per member: with 1,000
    streams on a run, one event cost 350 ms of CPU. Here the sweep runs at most once a second, a group send
    puts the one message on each member's queue (consumers must not change a message they receive), and a
    channel keeps its queue until it leaves its group.

    Never silently short: a message that cannot be queued (the channel is full) or that waits past `expiry`
    (a stream that far behind) is dropped, and the stream's next receive is a `run.catch_up`, so it reads
    what it missed from the table. The stock layer dropped them without a word, and on expiry also took the
    channel out of every group: a stream behind by a minute got nothing more, and a dropped last event (the
    run's end) was never noticed, since only a later event's `prev` would have told. Memberships do not
    expire either: a stream leaves its group when it closes (runs/stream.py), however long the run.

    Handed over at once: a channel whose reader said it takes run events itself (`take_now`, a stream under
    daphne) is given a group's message by a plain call, in the group send's own loop, when nothing waits for
    it: nothing queued, nothing missed, no message of its own still being handled (`handled`). So one event
    reaches a thousand streams without a thousand queue wake-ups, tasks and dispatches, and a reader that
    is behind, or busy, gets it queued behind the others as before, in order."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._next_sweep = 0.0
        self.missed: set[str] = set()  # channels that lost a message; each gets a catch-up next
        self.takers: dict[str, Callable[[dict[str, Any]], bool]] = {}
        self.handling: set[str] = set()  # channels whose reader received a message and is not done with it

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        wall = time.time()
        for queue in list(self.channels.values()):
            expired = False
            while not queue.empty() and queue._queue[0][0] < wall:
                queue.get_nowait()
                expired = True
            if expired:
                # Room now for the note (a stream waiting in receive() wakes to it); it never expires itself.
                queue.put_nowait((float("inf"), CATCH_UP))

    def _queue(self, channel: str) -> asyncio.Queue:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        if channel in self.missed:
            # Before what is still queued: the table read brings everything, and the queued events, already
            # sent by then, are skipped by id.
            self.missed.discard(channel)
            self.handling.add(channel)
            return CATCH_UP
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        except BaseException:
            # The reader went away (its consumer stopped): forget the channel unless messages wait in it.
            if queue.empty():
                self.channels.pop(channel, None)
            raise
        # Off the queue but not handled yet: nothing may be handed over past it until the reader says so.
        self.handling.add(channel)
        return message

    def take_now(self, channel: str, take: Callable[[dict[str, Any]], bool]) -> None:
        """From now on, `take(message)` is offered each group message for `channel` while nothing waits for
        it; it returns True if it took the message (sent it, or had sent it already), False to have it
        queued instead."""
        self.takers[channel] = take

    def handled(self, channel: str) -> None:
        """The reader of `channel` is done with the message it received."""
        self.handling.discard(channel)

    def take_waiting(self, channel: str, kind: str) -> list[dict[str, Any]]:
        """The messages of type `kind` at the head of `channel`'s queue, taken off it without waiting (a
        stream that fell behind sends them in one write); stops at the first of another type, so the order
        holds."""
        queue = self.channels.get(channel)
        taken = []
        while queue is not None and not queue.empty() and queue._queue[0][1]["type"] == kind:
            taken.append(queue.get_nowait()[1])
        return taken

    async def group_discard(self, group: str, channel: str) -> None:
        await super().group_discard(group, channel)
        # A channel in no group any more will not be read again (its stream is closing): drop its queue with
        # whatever still waits in it (receive no longer does).
        if not any(channel in g for g in self.groups.values()):
            self.channels.pop(channel, None)
            self.missed.discard(channel)
            self.takers.pop(channel, None)
            self.handling.discard(channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            take = self.takers.get(channel)
            if (
                take is not None
                and channel not in self.handling
                and channel not in self.missed
                and ((queue := self.channels.get(channel)) is None or queue.empty())
                and take(message)
            ):
                continue
            try:
                await self.send(channel, message)
            except ChannelFull:
                self.missed.add(channel)


class RunEventFeed:
    """The reader's life: started by the first stream, stopped when the last one leaves."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.watchers: Counter[int] = Counter()  # open streams per run, in this process
        self.last_sent: dict[int, int] = {}  # per watched run, the newest event id group-sent
        self.reads = 0  # how many times the table was asked for new events, for tests and the benchmark
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._next_stale_check = 0.0

    @property
    def open_streams(self) -> int:
        return sum(self.watchers.values())

    async def watch(self, run_id: int) -> None:
        """Count a stream of `run_id`; returns once every event committed from now on will reach its group."""
        self.watchers[run_id] += 1
        if self._task is None:
            self._ready.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="run-event-feed")
        await self._ready.wait()

    def unwatch(self, run_id: int) -> None:
        self.watchers[run_id] -= 1
        if self.watchers[run_id] <= 0:
            del self.watchers[run_id]
            self.last_sent.pop(run_id, None)

    async def dispatch(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            run_id = row["run_id"]
            if run_id not in self.watchers:
                continue
            prev = self.last_sent.get(run_id)
            if prev is not None and row["id"] <= prev:
                continue
            self.last_sent[run_id] = row["id"]
            message = {
                "type": "run.event",
                "id": row["id"],
                "prev": prev,
                "frame": event_frame(row),
                "finishes": finishes_run(row),
            }
            await self.layer.group_send(run_group(run_id), message)

    async def _run(self) -> None:
        raise NotImplementedError

    def _stopping(self) -> bool:
        # Checked and cleared with no await in between, so a watch() arriving now starts a fresh reader.
        if self.watchers:
            return False
        self._task = None
        return True

    async def _check_stale(self) -> None:
        """A runner killed without a word writes no final event; while someone watches, find it (one query
        every RUN_STALE_SECONDS / 3) so its run turns interrupted and the watchers get the status and the end."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_stale_check:
            self._next_stale_check = loop.time() + self.stale_interval()
            await _mark_stale_runs()

    @staticmethod
    def stale_interval() -> float:
        return max(settings.RUN_STALE_SECONDS / 3, 1.0)


def _database_files() -> list[Path]:
    """The SQLite database's file and its write-ahead log, when the database is a file (else none)."""
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or not os.path.isfile(name):
        return []
    path = Path(name).resolve()
    return [path, path.with_name(f"{path.name}-wal")]


class DatabaseWrites:
    """Linux: told by the kernel (inotify) of every write to the SQLite file or its write-ahead log, so the
    feed reads a commit's events at once instead of at its next poll. Watches the folder, not the files: a
    checkpoint deletes the log and the next writer makes a new one."""

    def __init__(self, files: list[Path]) -> None:
        from asyncinotify import Inotify, Mask

        self._names = {path.name for path in files}
        self._overflow = Mask.Q_OVERFLOW
        self._inotify = Inotify()
        self._inotify.add_watch(files[0].parent, Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO)
        self.changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read(), name="run-event-db-writes")

    @classmethod
    def start(cls) -> DatabaseWrites | None:
        files = _database_files()
        if not files:
            return None
        try:
            return cls(files)
        except (ImportError, OSError, AttributeError):  # not Linux, or no inotify left: the poll alone
            log.info("live stream: no inotify for the database; new events are polled for only")
            return None

    async def _read(self) -> None:
        while True:
            event = await self._inotify.get()
            if (event.name is not None and event.name.name in self._names) or self._overflow in event.mask:
                self.changed.set()

    async def wait(self, timeout: float) -> bool:
        """Until the database is written (since the last `wait`: True), or `timeout` (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.changed.wait()
        written = self.changed.is_set()
        self.changed.clear()  # before the read that follows: a write during it is told again
        return written

    def close(self) -> None:
        self._task.cancel()
        self._inotify.close()


class PollingFeed(RunEventFeed):
    """SQLite: reads new events every SSE_POLL_SECONDS, and at once when the kernel says the database was
    written (`DatabaseWrites`, Linux); a burst of writes is read at most every WRITES_GAP seconds."""

    WRITES_GAP = 0.005

    async def _run(self) -> None:
        try:
            self.watermark = await max_event_id()
        except Exception:
            log.exception("live stream: could not read the run-event table")
            self.watermark = 0
        writes = DatabaseWrites.start()
        self._ready.set()
        try:
            while True:
                written = False
                if writes is None:
                    await asyncio.sleep(settings.SSE_POLL_SECONDS)
                else:
                    written = await writes.wait(settings.SSE_POLL_SECONDS)
                if self._stopping():
                    return
                try:
                    await self._check_stale()
                    await self._poll()
                except Exception:
                    log.exception("live stream: reading run events failed; retrying")
                if written:
                    await asyncio.sleep(self.WRITES_GAP)
        finally:
            if writes is not None:
                writes.close()

    async def _poll(self) -> None:
        while True:
            self.reads += 1
            rows = await events_after(self.watermark)
            if rows:
                self.watermark = rows[-1]["id"]
                await self.dispatch(rows)
            if len(rows) < FETCH_BATCH:
                return


class NotifyFeed(RunEventFeed):
    """PostgreSQL: LISTEN on one connection of its own; read the announced rows by id."""

    def __init__(self) -> None:
        super().__init__()
        self._announced: list[int] = []
        self._wake = asyncio.Event()

    async def _run(self) -> None:
        reader = asyncio.get_running_loop().create_task(self._read_announced(), name="run-event-reads")
        reconnecting = False
        try:
            while not self._stopping():
                try:
                    await self._listen(catch_up=reconnecting)
                except (psycopg.Error, OSError):
                    log.exception("live stream: the LISTEN connection failed; reconnecting")
                    reconnecting = True
                    self._ready.set()  # streams still open; they catch up once we are back
                    await asyncio.sleep(1)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _listen(self, *, catch_up: bool) -> None:
        params = {k: v for k, v in connection.get_connection_params().items() if isinstance(v, str | int)}
        params.pop("prepare_threshold", None)
        async with await psycopg.AsyncConnection.connect(autocommit=True, **params) as conn:
            await conn.execute(f"LISTEN {events.NOTIFY_CHANNEL}")
            if catch_up:
                # Events committed while we were not listening were announced to nobody: every open stream
                # reads what it missed from the table.
                for run_id in list(self.watchers):
                    await self.layer.group_send(run_group(run_id), {"type": "run.catch_up"})
            self._ready.set()
            tick = min(self.stale_interval(), 1.0)
            while self.watchers:
                async for note in conn.notifies(timeout=tick):
                    run_id, _, event_id = note.payload.partition(":")
                    if int(run_id) in self.watchers:
                        self._announced.append(int(event_id))
                        self._wake.set()
                try:
                    await self._check_stale()
                except Exception:
                    log.exception("live stream: the stale-runner check failed")
            # Nobody watches: a watch() from now on waits for the next LISTEN (no await since the check above).
            self._ready.clear()

    async def _read_announced(self) -> None:
        # Announcements that arrive while a read is running are read together on the next one.
        while True:
            await self._wake.wait()
            self._wake.clear()
            ids, self._announced = self._announced[:FETCH_BATCH], self._announced[FETCH_BATCH:]
            if self._announced:
                self._wake.set()
            if not ids:
                continue
            try:
                self.reads += 1
                await self.dispatch(await events_by_id(ids))
            except Exception:
                log.exception("live stream: reading announced run events failed")
                for run_id in list(self.watchers):
                    await self.layer.group_send(run_group(run_id), {"type": "run.catch_up"})


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunEventFeed] = weakref.WeakKeyDictionary()


def get_feed() -> RunEventFeed:
    """This event loop's feed: LISTEN/NOTIFY on PostgreSQL, polling otherwise."""
    loop = asyncio.get_running_loop()
    feed = _feeds.get(loop)
    if feed is None:
        feed = _feeds[loop] = NotifyFeed() if connection.vendor == "postgresql" else PollingFeed()
    return feed


@on_reader_thread
def _close_reader_connection() -> None:
    connection.close()


async def stop_feed_for_tests() -> None:
    """Stop this loop's feed and close its connections (tests run many event loops and databases)."""
    feed = _feeds.pop(asyncio.get_running_loop(), None)
    if feed is not None and feed._task is not None:
        feed._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed._task
    await _close_reader_connection()
