"""Under daphne the feed hands a run's event to each stream that keeps up by a plain call in its own loop
(runs.feed.RunStreamLayer.take_now, written through qeeg_site.socket_writes.BODY_NOW): no channel message,
no dispatch per stream. A stream that is busy, behind, short of an event or whose connection is gone gets
its events as messages as before, in order and never twice; the run's end and a sign-out still end it.

The guarantees of tests/test_stream.py run both ways (its `client` fixture); these pin the hand-over itself."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from runs import feed
from runs.stream import RunStreamConsumer
from tests.stream_helpers import SSEReader, session_cookie
from tests.test_stream import (  # fast_stream, stop_reader: autouse (fast polling; the feed stopped after)
    Client,
    _until_dispatched,
    emit,
    fast_stream,  # noqa: F401
    make_run,
    stop_reader,  # noqa: F401
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(db):
    return make_run()


@pytest.fixture
async def viewer(clinician):
    viewer = Client(await session_cookie(clinician), hand_over=True)
    yield viewer
    await viewer.close()


@pytest.fixture
def messages_handled(monkeypatch) -> list[int]:
    """Ids of the run events that reached a stream as channel messages (`run_event`)."""
    handled: list[int] = []
    original = RunStreamConsumer.run_event

    async def run_event(self, message):
        handled.append(message["id"])
        return await original(self, message)

    monkeypatch.setattr(RunStreamConsumer, "run_event", run_event)
    return handled


async def _open(viewer: Client, run_id: int) -> tuple[SSEReader, str]:
    response = await viewer.get(f"/api/runs/{run_id}/stream")
    assert response.status == 200
    reader = SSEReader(response.body)
    assert (await reader.event()).event == "snapshot"
    channel = list(get_channel_layer().groups[feed.run_group(run_id)])[-1]  # the newest member: this stream
    return reader, channel


async def _nothing_more(reader: SSEReader, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await reader.frame(timeout=seconds)


def _started(run_id: int, i: int):
    return emit(run=run_id, kind="model_started", stage=1, model_id=f"m{i}", attempt=1)


async def test_a_stream_that_keeps_up_is_handed_each_event_without_a_message(viewer, run, messages_handled):
    readers = [(await _open(viewer, run.pk))[0] for _ in range(3)]
    rows = [await _started(run.pk, i) for i in range(4)]
    for reader in readers:
        assert [(await reader.event()).id for _ in rows] == [r.pk for r in rows]
    assert messages_handled == []
    for hand_over in viewer.hand_overs:
        assert len(hand_over.bodies) == len(rows)
        assert all(f"id: {r.pk}\n".encode() in body for r, body in zip(rows, hand_over.bodies, strict=True))
    # The run's end goes as a message: the consumer writes it, the `end` event and closes.
    final = await emit(run=run.pk, kind="status", status="complete")
    for reader in readers:
        assert (await reader.event()).id == final.pk
        assert (await reader.event()).event == "end"
        assert await reader.ended()
    assert messages_handled == [final.pk] * 3


async def test_events_for_a_busy_stream_queue_behind_what_it_is_handling_in_order(
    viewer, run, messages_handled, monkeypatch
):
    """The consumer took a message off its channel and is still at it (here a catch-up held at its start):
    an event handed over now would overtake it. The events queue, and come after it, each once."""
    reader, channel = await _open(viewer, run.pk)
    [hand_over] = viewer.hand_overs
    before = await _started(run.pk, 0)
    assert (await reader.event()).id == before.pk
    release, holding = asyncio.Event(), asyncio.Event()
    original = RunStreamConsumer.run_catch_up

    async def held_catch_up(self, message):
        holding.set()
        await release.wait()
        return await original(self, message)

    monkeypatch.setattr(RunStreamConsumer, "run_catch_up", held_catch_up)
    layer = get_channel_layer()
    await layer.send(channel, {"type": "run.catch_up"})
    await asyncio.wait_for(holding.wait(), 5)
    assert channel in layer.handling
    rows = [await _started(run.pk, i) for i in range(1, 4)]
    await _until_dispatched(rows[-1].pk, run.pk)
    assert len(hand_over.bodies) == 1  # nothing handed over past the held message
    release.set()
    got = [await reader.event() for _ in rows]
    assert [f.id for f in got] == [r.pk for r in rows]
    await _nothing_more(reader)
    # All three were queued: the first reached run_event, which took the other two with it; all three
    # skipped there as already sent by the catch-up's read of the table.
    assert messages_handled == [rows[0].pk]
    later = await _started(run.pk, 4)
    assert (await reader.event()).id == later.pk
    assert later.pk not in messages_handled  # done with the queue: handed over again
    assert f"id: {later.pk}\n".encode() in hand_over.bodies[-1]


async def test_an_event_after_one_the_stream_missed_is_read_from_the_table(
    viewer, run, messages_handled, monkeypatch
):
    reader, _ = await _open(viewer, run.pk)
    layer = get_channel_layer()
    original = type(layer).group_send
    lost: list[int] = []

    async def losing_group_send(self, group, message):
        if not lost:  # the first event never reaches the group (a full channel, say)
            lost.append(message["id"])
            return
        await original(self, group, message)

    monkeypatch.setattr(type(layer), "group_send", losing_group_send)
    first = await _started(run.pk, 0)
    await _until_dispatched(first.pk, run.pk)
    second = await _started(run.pk, 1)
    got = [await reader.event(), await reader.event()]
    assert [f.id for f in got] == [first.pk, second.pk]
    assert lost == [first.pk] and messages_handled == [second.pk]  # not handed over: `prev` was not sent
    await _nothing_more(reader)


async def test_a_connection_gone_gets_its_events_as_messages(viewer, run, messages_handled):
    await _open(viewer, run.pk)
    [hand_over] = viewer.hand_overs
    hand_over.gone = True  # the write says the connection is closed: the message goes the ASGI way
    row = await _started(run.pk, 0)
    await _until_dispatched(row.pk, run.pk)
    # Dispatched is the group send; the consumer takes the message in its own task, later under load.
    for _ in range(200):
        if messages_handled:
            break
        await asyncio.sleep(0.02)
    assert messages_handled == [row.pk] and hand_over.bodies == []


async def test_a_sign_out_ends_a_handed_over_stream_and_nothing_is_handed_to_it_after(viewer, run):
    reader, channel = await _open(viewer, run.pk)
    [hand_over] = viewer.hand_overs
    layer = get_channel_layer()
    await layer.send(channel, {"type": "run.signed_out", "detail": "You are signed out."})
    frame = await reader.event()
    assert frame.event == "signed_out" and frame.data["detail"] == "You are signed out."
    assert await reader.ended()
    assert channel not in layer.takers
    row = await _started(run.pk, 0)
    await asyncio.sleep(0.2)
    assert feed.get_feed().last_sent.get(run.pk) != row.pk  # nobody watches the run here now
    [signed_out] = hand_over.bodies  # the stream's last write, and nothing after it
    assert signed_out.startswith(b"event: signed_out\n")
