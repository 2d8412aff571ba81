"""A stream that fell behind sends what waits for it in one write: every frame, in order, none twice.

The server's work per write (daphne's reply, Twisted's buffer and the poller) is what a thousand open streams
pay for on every event, so a lagging stream, a resume and the opening each go out as one body message."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from runs import feed
from runs.stream import RunStreamConsumer
from tests.stream_helpers import FrameParser, session_cookie
from tests.test_stream import (  # fast_stream, stop_reader: autouse (fast polling; the feed stopped after)
    Client,
    _until_dispatched,
    emit,
    fast_stream,  # noqa: F401
    make_run,
    open_stream,
    stop_reader,  # noqa: F401
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(db):
    return make_run()


@pytest.fixture
async def viewer(clinician):
    """The signed-in clinician's streams, closed afterwards (test_stream's `client`)."""
    viewer = Client(await session_cookie(clinician))
    yield viewer
    for response in viewer.responses:
        if not response.communicator.future.done():
            await response.disconnect()


async def _chunks_until(body, frames_wanted: int, timeout: float = 5.0) -> list[list]:
    """Raw body messages, each parsed into its frames, until `frames_wanted` named events came."""
    parser, chunks, named = FrameParser(), [], 0
    while named < frames_wanted:
        chunk = await asyncio.wait_for(anext(body), timeout)
        frames = parser.feed(chunk)
        chunks.append(frames)
        named += sum(f.event is not None for f in frames)
    return chunks


async def _held(client_, run_id):
    """An open stream (snapshot read) whose consumer stops at its first live event until released."""
    response = await client_.get(f"/api/runs/{run_id}/stream")
    assert response.status == 200
    opening = await _chunks_until(response.body, 1)
    release = asyncio.Event()
    original = RunStreamConsumer.run_event
    held: list[int] = []

    async def slow(self, message):
        if not held:
            held.append(message["id"])
            await release.wait()
        return await original(self, message)

    return response, opening, release, slow


async def test_a_stream_that_fell_behind_gets_the_waiting_events_in_one_write_in_order(
    viewer, run, monkeypatch
):
    response, _, release, slow = await _held(viewer, run.pk)
    monkeypatch.setattr(RunStreamConsumer, "run_event", slow)
    rows = [
        await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1) for i in range(6)
    ]
    await _until_dispatched(rows[-1].pk, run.pk)  # one in the consumer's hands, five waiting in its queue
    release.set()
    [frames] = await _chunks_until(response.body, len(rows))  # one body message for all six
    assert [f.id for f in frames] == [r.pk for r in rows]
    assert [f.data["model_id"] for f in frames] == [f"m{i}" for i in range(6)]
    [channel] = get_channel_layer().groups[feed.run_group(run.pk)]
    assert get_channel_layer().channels[channel].empty()

    later = await emit(run=run.pk, kind="stage_finished", stage=1, ok=6, failed=0, total=6)
    [[frame]] = await _chunks_until(response.body, 1)  # caught up: the next event alone, at once
    assert frame.id == later.pk


async def test_the_run_end_inside_a_gathered_write_ends_the_stream_after_every_frame(
    viewer, run, monkeypatch
):
    response, _, release, slow = await _held(viewer, run.pk)
    monkeypatch.setattr(RunStreamConsumer, "run_event", slow)
    rows = [
        await emit(run=run.pk, kind="model_started", stage=5, model_id=f"m{i}", attempt=1) for i in range(3)
    ]
    rows.append(await emit(run=run.pk, kind="status", status="complete"))
    await _until_dispatched(rows[-1].pk, run.pk)
    release.set()
    [frames] = await _chunks_until(response.body, len(rows) + 1)
    assert [f.id for f in frames] == [r.pk for r in rows] + [rows[-1].pk]
    assert [f.event for f in frames][-2:] == ["status", "end"]
    assert b"".join([chunk async for chunk in response.body]) == b""  # and then the response ended


async def test_waiting_messages_of_another_kind_stay_queued_behind_the_events(viewer, run, monkeypatch):
    """A catch-up note in the queue is not an event: the events before it go in one write, it is handled
    after them (reading the table), and nothing comes twice."""
    response, _, release, slow = await _held(viewer, run.pk)
    monkeypatch.setattr(RunStreamConsumer, "run_event", slow)
    layer = get_channel_layer()
    [channel] = layer.groups[feed.run_group(run.pk)]
    first = [
        await emit(run=run.pk, kind="model_started", stage=1, model_id=f"a{i}", attempt=1) for i in range(3)
    ]
    await _until_dispatched(first[-1].pk, run.pk)
    await layer.send(channel, feed.CATCH_UP)
    second = [
        await emit(run=run.pk, kind="model_started", stage=1, model_id=f"b{i}", attempt=1) for i in range(2)
    ]
    await _until_dispatched(second[-1].pk, run.pk)
    release.set()
    chunks = await _chunks_until(response.body, 5)
    ids = [f.id for chunk in chunks for f in chunk]
    assert ids == [r.pk for r in first + second]
    assert [f.id for f in chunks[0]] == [r.pk for r in first]  # up to the note, in one write


async def test_a_resume_sends_the_retry_hint_and_its_backlog_in_one_write(viewer, run):
    rows = [
        await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1) for i in range(40)
    ]
    response = await viewer.get(f"/api/runs/{run.pk}/stream", **{"Last-Event-ID": str(rows[9].pk)})
    [frames] = await _chunks_until(response.body, 30)
    assert frames[0].retry == 2000
    assert [f.id for f in frames[1:]] == [r.pk for r in rows[10:]]


async def test_a_fresh_stream_opens_with_one_write(viewer, run):
    response = await viewer.get(f"/api/runs/{run.pk}/stream")
    [frames] = await _chunks_until(response.body, 1)
    assert frames[0].retry == 2000 and frames[1].event == "snapshot"


async def test_streams_that_keep_up_still_get_each_event_as_it_comes(viewer, run):
    stream = await open_stream(viewer, run.pk)
    await stream.event()
    for i in range(3):
        row = await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1)
        frame = await stream.event()
        assert frame.id == row.pk
