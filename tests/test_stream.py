"""The run's live stream: a snapshot first, named events with ids, resume without loss or repeats, an end.
Requests go through the project's whole ASGI application, as daphne sends them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone

from jobs.models import Job
from patients.models import Patient, Report
from runs import feed
from runs.events import event_emit
from runs.models import Run, RunEvent
from runs.stream import RunStreamConsumer
from tests.job_helpers import runner_job
from tests.stream_helpers import HandOver, SSEReader, asgi_request, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_stream(settings):
    settings.SSE_POLL_SECONDS = 0.02
    settings.SSE_KEEPALIVE_SECONDS = 30


@pytest.fixture(autouse=True)
async def stop_reader():
    yield
    await feed.stop_feed_for_tests()


def make_run(status: str = Run.Status.RUNNING) -> Run:
    patient = Patient.objects.create(label=f"P-{Patient.objects.count() + 1}")
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64, status="ready")
    return Run.objects.create(
        patient=patient,
        report=report,
        council_models=["gpt-5", "claude-sonnet-4-5"],
        consolidator="claude-sonnet-4-5",
        status=status,
        # A live runner as far as anyone can tell (a fresh heartbeat), so the stale-runner check leaves it alone.
        job=runner_job() if status == Run.Status.RUNNING else None,
    )


@pytest.fixture
def run(db) -> Run:
    return make_run()


class Client:
    """Opens streams as the signed-in clinician and closes them (as a leaving browser would) afterwards.
    `hand_over`: each stream's scope offers daphne's direct body write, as under daphne, so the feed hands
    it its events (runs.feed.RunStreamLayer.take_now); else they come as channel messages."""

    def __init__(self, cookie: str, *, hand_over: bool = False) -> None:
        self.cookie = cookie
        self.hand_over = hand_over
        self.responses = []
        self.hand_overs: list[HandOver] = []

    async def get(self, path: str, **headers: str):
        hand_over = HandOver() if self.hand_over else None
        response = await asgi_request(path, headers={"Cookie": self.cookie, **headers}, hand_over=hand_over)
        self.responses.append(response)
        if hand_over is not None:
            self.hand_overs.append(hand_over)
        return response

    async def close(self) -> None:
        for response in self.responses:
            if not response.communicator.future.done():
                await response.disconnect()


@pytest.fixture(params=[False, True], ids=["messages", "handed-over"])
async def client(clinician, request):
    """Every guarantee below holds both ways an event reaches a stream."""
    client = Client(await session_cookie(clinician), hand_over=request.param)
    yield client
    await client.close()


@pytest.fixture
async def messages_client(clinician):
    """Streams that get every event as a channel message (held in `run_event` by the tests that need it)."""
    client = Client(await session_cookie(clinician))
    yield client
    await client.close()


emit = sync_to_async(event_emit)


async def open_stream(client: Client, run_id: int, **headers: str) -> SSEReader:
    response = await client.get(f"/api/runs/{run_id}/stream", **headers)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return SSEReader(response.body)


async def test_fresh_connection_gets_a_snapshot_then_live_events(client, run):
    first = await emit(run=run.pk, kind="status", status="running")
    second = await emit(run=run.pk, kind="stage_started", stage=1, models=["gpt-5", "claude-sonnet-4-5"])
    stream = await open_stream(client, run.pk)

    snapshot = await stream.event()
    assert snapshot.event == "snapshot"
    assert snapshot.id == second.pk  # the snapshot covers everything up to the newest event
    assert snapshot.data["status"] == "running"
    assert snapshot.data["finished"] is False
    assert "progress" in snapshot.data
    assert first.pk < second.pk

    started = await emit(run=run.pk, kind="model_started", stage=1, model_id="gpt-5", attempt=1)
    live = await stream.event()
    assert (live.event, live.id) == ("model_started", started.pk)
    assert live.data["model_id"] == "gpt-5"
    assert live.data["stage"] == 1
    assert live.data["data"] == {"attempt": 1}


async def test_last_event_id_resumes_with_the_missed_events_only(client, run):
    ids = [
        (await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1)).pk
        for i in range(4)
    ]
    stream = await open_stream(client, run.pk, **{"Last-Event-ID": str(ids[1])})

    got = [await stream.event(), await stream.event()]
    assert [f.id for f in got] == ids[2:]
    assert all(f.event == "model_started" for f in got)  # no snapshot on a resume

    later = await emit(run=run.pk, kind="stage_finished", stage=1, ok=4, failed=0, total=4)
    frame = await stream.event()
    assert (frame.event, frame.id) == ("stage_finished", later.pk)


async def test_resume_by_query_parameter_while_events_pour_in_has_no_gap_and_no_repeat(client, run):
    """The hand-over from the table read to the live queue is where events get lost or doubled."""
    emitted: list[int] = []

    async def runner() -> None:
        for i in range(40):
            emitted.append(
                (await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1)).pk
            )
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(runner())
    await asyncio.sleep(0.05)  # some events are in the table before we connect, the rest arrive live
    response = await client.get(f"/api/runs/{run.pk}/stream?last_event_id=0")
    stream = SSEReader(response.body)
    received = []
    while len(received) < 40:
        received.append((await stream.event()).id)
    await writer
    assert received == emitted
    with pytest.raises(TimeoutError):
        await stream.event(timeout=0.3)  # and nothing more


async def test_events_read_from_the_table_are_not_sent_again_by_the_live_reader(client, run, settings):
    """With the shared reader already running and between polls, a resume reads events from the table that
    the reader will hand to the new stream again on its next poll: they must go out once."""
    settings.SSE_POLL_SECONDS = 0.4
    watcher = await open_stream(client, run.pk)
    await watcher.event()
    await asyncio.sleep(0.45)  # the reader has just polled; the next poll is ~0.4 s away
    emitted = [
        (await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1)).pk
        for i in range(5)
    ]
    stream = await open_stream(client, run.pk, **{"Last-Event-ID": "0"})
    received = [(await stream.event()).id for _ in range(5)]
    assert received == emitted
    with pytest.raises(TimeoutError):
        await stream.event(timeout=0.9)


async def test_other_runs_events_are_not_sent(client, run):
    other = await sync_to_async(make_run)()
    stream = await open_stream(client, run.pk)
    await stream.event()  # snapshot
    await emit(run=other.pk, kind="stage_started", stage=1, models=["gpt-5"])
    mine = await emit(run=run.pk, kind="stage_started", stage=1, models=["gpt-5"])
    frame = await stream.event()
    assert frame.id == mine.pk


async def test_stream_ends_with_an_end_event_once_the_run_finishes(client, run):
    stream = await open_stream(client, run.pk)
    await stream.event()
    done = await emit(run=run.pk, kind="status", status="needs_auth", error="Sign in to the upstream again.")
    status = await stream.event()
    assert (status.event, status.id, status.data["data"]["status"]) == ("status", done.pk, "needs_auth")
    end = await stream.event()
    assert end.event == "end"
    assert await stream.ended()


async def test_a_finished_run_gets_its_snapshot_and_end_at_once(client, db):
    run = await sync_to_async(make_run)(status=Run.Status.COMPLETE)
    stream = await open_stream(client, run.pk)
    snapshot = await stream.event()
    assert snapshot.event == "snapshot"
    assert snapshot.data["finished"] is True
    assert (await stream.event()).event == "end"
    assert await stream.ended()


async def test_running_status_does_not_end_the_stream(client, run):
    stream = await open_stream(client, run.pk)
    await stream.event()
    await emit(run=run.pk, kind="status", status="running")
    assert (await stream.event()).event == "status"
    with pytest.raises(TimeoutError):
        await stream.event(timeout=0.3)


async def test_idle_stream_gets_keepalive_comments(client, run, settings):
    settings.SSE_KEEPALIVE_SECONDS = 0.1
    stream = await open_stream(client, run.pk)
    assert (await stream.event()).event == "snapshot"
    frame = await stream.frame(timeout=1)
    assert frame.comment == "keepalive"
    assert frame.event is None


async def test_many_streams_share_one_reader_which_stops_when_nobody_listens(client, settings):
    runs = [await sync_to_async(make_run)() for _ in range(6)]
    streams = [await client.get(f"/api/runs/{r.pk}/stream") for r in runs]
    for s in streams:
        await SSEReader(s.body).event()
    reader = feed.get_feed()
    assert reader.open_streams == 6
    before = reader.reads
    await asyncio.sleep(0.5)
    reads = reader.reads - before
    if connection.vendor == "postgresql":
        assert reads == 0  # LISTEN/NOTIFY: nothing happened, so nothing was asked of the database
    else:
        # One reader polling every 20 ms: about 25 reads in 0.5 s, not 6 x 25.
        assert 5 <= reads <= 40
    # Clients going away (daphne sends http.disconnect) leave their groups and the reader.
    for s in streams:
        await s.disconnect()
    assert reader.open_streams == 0
    assert not get_channel_layer().groups
    assert not get_channel_layer().channels  # no queue is left behind by a stream that went away
    for _ in range(30):
        if reader._task is None:
            break
        await asyncio.sleep(0.1)
    assert reader._task is None  # the reader stopped
    stopped_at = reader.reads
    await asyncio.sleep(0.2)
    assert reader.reads == stopped_at


async def test_an_event_the_group_did_not_bring_is_read_from_the_table(client, run, monkeypatch):
    """A stream's group message says which event of the run came before it; if the stream never got that
    one (its channel was full), it reads the run's events after its last from the table: no gap."""
    stream = await open_stream(client, run.pk)
    snapshot = await stream.event()

    async def quiet(rows):  # the feed hands nothing on; we play it
        return None

    monkeypatch.setattr(feed.get_feed(), "dispatch", quiet)
    rows = [
        await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1) for i in range(3)
    ]
    backlog_reads = []
    original = RunStreamConsumer._send_backlog

    async def counted(self):
        backlog_reads.append(self.sent)
        return await original(self)

    monkeypatch.setattr(RunStreamConsumer, "_send_backlog", counted)
    last = (await sync_to_async(list)(RunEvent.objects.filter(pk=rows[-1].pk).values(*feed.EVENT_FIELDS)))[0]
    await get_channel_layer().group_send(
        feed.run_group(run.pk),
        {"type": "run.event", "id": last["id"], "prev": rows[-2].pk, "frame": feed.event_frame(last),
         "finishes": False},
    )  # fmt: skip
    got = [await stream.event() for _ in rows]
    assert [f.id for f in got] == [r.pk for r in rows]
    assert backlog_reads == [snapshot.id]
    with pytest.raises(TimeoutError):
        await stream.event(timeout=0.3)  # the injected event is not sent twice


async def test_event_ids_match_the_table(client, run):
    stream = await open_stream(client, run.pk)
    await stream.event()
    event = await emit(
        run=run.pk, kind="artifact_written", stage=1, model_id="gpt-5", artifact_id=7, kind_="md"
    )
    frame = await stream.event()
    row = await RunEvent.objects.aget(pk=frame.id)
    assert row.pk == event.pk and row.kind == frame.event == "artifact_written"


async def test_a_silent_runner_is_found_while_someone_watches_and_the_stream_ends(client, run, settings):
    """kill -9 on the runner: no final event is ever written by it. The watched run turns interrupted."""
    settings.RUN_STALE_SECONDS = 1
    await Job.objects.filter(pk=run.job_id).aupdate(heartbeat_at=timezone.now() - timedelta(seconds=30))
    stream = await open_stream(client, run.pk)
    assert (await stream.event()).data["status"] == "running"
    status = await stream.event(timeout=5)
    assert status.event == "status" and status.data["data"]["status"] == "interrupted"
    assert (await stream.event()).event == "end"


async def _held_stream(client, run, monkeypatch):
    """A stream whose consumer stops at its first live event until `release` is set (a slow client, a
    saturated process), and its channel in the layer."""
    stream = await open_stream(client, run.pk)
    await stream.event()  # snapshot
    release = asyncio.Event()
    original = RunStreamConsumer.run_event
    held: list[int] = []

    async def slow(self, message):
        if not held:
            held.append(message["id"])
            await release.wait()
        return await original(self, message)

    monkeypatch.setattr(RunStreamConsumer, "run_event", slow)
    layer = get_channel_layer()
    [channel] = layer.groups[feed.run_group(run.pk)]
    take = layer.takers.get(channel)
    if take is not None:  # handed over, the first live event would never reach run_event: queue it
        layer.takers[channel] = lambda message: bool(held) and take(message)
    return stream, release, layer, channel


async def _until_dispatched(event_id: int, run_id: int) -> None:
    for _ in range(200):
        if feed.get_feed().last_sent.get(run_id) == event_id:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the feed never handed the event on")


async def test_events_dropped_by_a_full_channel_reach_the_stream_even_when_they_are_the_last(
    client, run, monkeypatch
):
    """A full channel drops a message. When no later event follows (the run's own end), nothing else told
    the stream it missed one: it waited forever without the end. Now its next receive is a catch-up."""
    stream, release, layer, channel = await _held_stream(client, run, monkeypatch)
    layer.channels[channel]._maxsize = 2  # room for two waiting messages
    rows = [
        await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1) for i in range(4)
    ]
    rows.append(await emit(run=run.pk, kind="status", status="complete"))
    await _until_dispatched(rows[-1].pk, run.pk)  # one in the consumer's hands, two queued, two dropped
    release.set()
    got = [await stream.event() for _ in rows]
    assert [f.id for f in got] == [r.pk for r in rows]
    assert (await stream.event()).event == "end"
    assert await stream.ended()


async def test_events_that_waited_past_the_layers_expiry_are_read_from_the_table(client, run, monkeypatch):
    """The stock layer dropped expired messages AND took the channel out of its group: a stream a minute
    behind got nothing more, ever. Now the stream stays in its group and catches up from the table."""
    stream, release, layer, channel = await _held_stream(client, run, monkeypatch)
    monkeypatch.setattr(layer, "expiry", 0.2)
    early = [
        await emit(run=run.pk, kind="model_started", stage=1, model_id=f"m{i}", attempt=1) for i in range(3)
    ]
    await _until_dispatched(early[-1].pk, run.pk)
    await asyncio.sleep(0.4)  # the queued two are past their expiry now
    layer._next_sweep = 0.0
    late = await emit(run=run.pk, kind="stage_finished", stage=1, ok=3, failed=0, total=3)
    await _until_dispatched(late.pk, run.pk)  # its group send swept the expired ones out
    assert channel in layer.groups[feed.run_group(run.pk)]
    release.set()
    got = [await stream.event() for _ in range(4)]
    assert [f.id for f in got] == [r.pk for r in [*early, late]]
    final = await emit(run=run.pk, kind="status", status="complete")
    assert (await stream.event()).id == final.pk
    assert (await stream.event()).event == "end"
