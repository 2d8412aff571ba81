"""On SQLite the feed is told by the kernel (inotify on the database's folder) when the database file or its
write-ahead log is written, and reads the new events then, not at its next poll; the poll still runs every
SSE_POLL_SECONDS, alone where there is no inotify (runs.feed.DatabaseWrites)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from runs import feed
from tests.stream_helpers import session_cookie
from tests.test_stream import (  # stop_reader: autouse (the feed stopped after each test)
    Client,
    emit,
    make_run,
    open_stream,
    stop_reader,  # noqa: F401
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(db):
    return make_run()


@pytest.fixture(params=[False, True], ids=["messages", "handed-over"])
async def viewer(clinician, request):
    viewer = Client(await session_cookie(clinician), hand_over=request.param)
    yield viewer
    await viewer.close()


async def test_a_commit_reaches_the_stream_at_once_not_at_the_next_poll(viewer, run, settings):
    settings.SSE_POLL_SECONDS = 30  # the poll alone would take half a minute
    stream = await open_stream(viewer, run.pk)
    await stream.event()  # snapshot
    for i in range(3):
        written = time.monotonic()
        row = await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1)
        assert (await stream.event(timeout=2)).id == row.pk
        assert time.monotonic() - written < 2


async def test_without_inotify_the_poll_alone_brings_the_events(viewer, run, settings, monkeypatch):
    settings.SSE_POLL_SECONDS = 0.05
    monkeypatch.setattr(feed.DatabaseWrites, "start", classmethod(lambda cls: None))
    stream = await open_stream(viewer, run.pk)
    await stream.event()
    row = await emit(run=run.pk, kind="model_started", stage=1, model_id="m", attempt=1)
    assert (await stream.event(timeout=2)).id == row.pk


async def _told(writes: feed.DatabaseWrites) -> bool:
    try:
        await asyncio.wait_for(writes.changed.wait(), 1)
    except TimeoutError:
        return False
    writes.changed.clear()
    return True


async def test_writes_to_the_database_or_a_log_made_anew_are_told_and_other_files_are_not(tmp_path: Path):
    database = tmp_path / "db.sqlite3"
    database.write_bytes(b"")
    log = tmp_path / "db.sqlite3-wal"
    writes = feed.DatabaseWrites([database, log])
    try:
        with database.open("ab") as f:
            f.write(b"page")
        assert await _told(writes)
        log.write_bytes(b"frame")
        assert await _told(writes)
        log.unlink()  # a checkpoint by the last connection deletes the log; the next writer makes a new one
        log.write_bytes(b"frame")
        assert await _told(writes)
        (tmp_path / "db.sqlite3-shm").write_bytes(b"index")  # readers touch it: not a commit
        (tmp_path / "other.txt").write_bytes(b"x")
        assert not await _told(writes)
    finally:
        writes.close()
