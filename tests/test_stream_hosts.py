"""Several web servers, one PostgreSQL: a run's events, written by another process, stream live through two
daphne servers (each hears of them by LISTEN/NOTIFY, none polls), and a stream dropped on one server resumes on
the other with Last-Event-ID, with no gap and no repeat."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from qeeg_site.models import ApiToken
from runs.events import event_emit
from runs.models import RunEvent
from tests.stream_helpers import ROOT, Frame, daphne_server, frames, next_event
from tests.test_stream import make_run

# Four threads of one process write the run's events at once, each on its own connection, as a runner's
# concurrent calls and a web process's stale-runner check may: the commits race for the sequence.
WRITER = """
import django, json, sys, threading, time
django.setup()
from django.db import connection
from runs.events import event_emit
run_id, per_thread = int(sys.argv[1]), int(sys.argv[2])
ids, lock = [], threading.Lock()
def write(t):
    for i in range(per_thread):
        e = event_emit(run=run_id, kind="model_started", stage=1, model_id=f"t{t}-{i}", attempt=1)
        with lock:
            ids.append(e.pk)
        time.sleep(0.002 * (t + 1))
    connection.close()
threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
ids.append(event_emit(run=run_id, kind="status", status="complete", error="").pk)
print(json.dumps(ids))
"""

# Holds one event's transaction open while another writer of the same run, and one of another run, try to
# write: the same run's writer must wait for the commit (so its id, taken after, is larger and commits later).
LOCKER = """
import django, json, sys, threading, time
django.setup()
from django.db import connection, transaction
from runs.events import event_emit
run_a, run_b = int(sys.argv[1]), int(sys.argv[2])
times, ids = {}, {}
holding = threading.Event()
def first():
    with transaction.atomic():
        ids["first"] = event_emit(run=run_a, kind="stage_started", stage=1, models=["m"]).pk
        holding.set()
        time.sleep(1.0)
        times["first_commit"] = time.monotonic()
    connection.close()
def second(name, run_id):
    holding.wait()
    ids[name] = event_emit(run=run_id, kind="stage_started", stage=2, models=["m"]).pk
    times[name] = time.monotonic()
    connection.close()
threads = [threading.Thread(target=first), threading.Thread(target=second, args=("same_run", run_a)),
           threading.Thread(target=second, args=("other_run", run_b))]
start = time.monotonic()
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"ids": ids, "times": {k: v - start for k, v in times.items()}}))
"""


def child(code: str, env: dict[str, str], *args: object) -> object:
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=dict(env, DJANGO_SETTINGS_MODULE="qeeg_site.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def servers(postgres_db) -> Iterator[tuple[str, str]]:
    # A stale-runner check or keep-alive now and then, but no polling: SSE_POLL_SECONDS is not used here.
    env = postgres_db.child_env(SSE_KEEPALIVE_SECONDS="0.5", LOG_LEVEL="WARNING")
    with daphne_server(env) as first, daphne_server(env) as second:
        yield first, second


class Watcher(threading.Thread):
    """Reads one stream in a thread: every named event, until `end` or until it has `stop_after` events."""

    def __init__(
        self, url: str, token: str, *, last_event_id: int | None = None, stop_after: int = 0
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.last_event_id, self.stop_after = url, token, last_event_id, stop_after
        self.got: list[Frame] = []
        self.opened = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=15) as response:
                assert response.status_code == 200
                stream = frames(response)
                if self.last_event_id is None:
                    self.got.append(next_event(stream))  # the snapshot
                self.opened.set()
                for frame in stream:
                    if frame.event is None:
                        continue
                    self.got.append(frame)
                    if frame.event == "end" or len(self.got) == self.stop_after:
                        return
        except BaseException as exc:
            self.error = exc
            self.opened.set()

    def result(self) -> list[Frame]:
        self.join(30)
        assert not self.is_alive(), "the stream did not finish in time"
        if self.error is not None:
            raise self.error
        return self.got


def listener_pids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
        )
        return [pid for (pid,) in cursor.fetchall()]


def listeners() -> int:
    return len(listener_pids())


def test_events_written_elsewhere_stream_through_two_servers_and_resume_across_them(postgres_db, servers):
    run = make_run()
    _, token = ApiToken.issue(user=make_user(run), name="hosts")
    first, second = (f"{url}/api/runs/{run.pk}/stream" for url in servers)

    on_first = Watcher(first, token)
    on_second = Watcher(second, token, stop_after=21)  # the snapshot and 20 events, then it drops
    for watcher in (on_first, on_second):
        watcher.start()
        assert watcher.opened.wait(20)
    assert listeners() == 2  # one LISTEN connection per web server

    written = child(WRITER, postgres_db.env, run.pk, 15)
    in_table = list(RunEvent.objects.filter(run=run).order_by("id").values_list("id", flat=True))
    assert sorted(written) == in_table and len(in_table) == 61

    live = on_first.result()
    assert live[0].event == "snapshot" and live[-1].event == "end"
    assert [f.id for f in live[1:-1]] == in_table  # every event, once, in id order, live through server 1
    assert live[-2].event == "status" and live[-2].data["data"]["status"] == "complete"

    dropped = on_second.result()
    assert dropped[0].event == "snapshot" and len(dropped) == 21
    seen = [f.id for f in dropped[1:]]
    assert seen == in_table[:20]  # live through server 2 as well

    resumed = Watcher(first, token, last_event_id=seen[-1])
    resumed.start()
    rest = resumed.result()
    assert rest[-1].event == "end"
    assert seen + [f.id for f in rest[:-1]] == in_table  # no gap, no repeat across the two servers


def test_a_runs_events_commit_in_id_order(postgres_db):
    """Two writers of one run: the second waits for the first's commit, so its id is larger and is never
    visible before the first's. A writer of another run does not wait."""
    run_a, run_b = make_run(), make_run()
    result = child(LOCKER, postgres_db.env, run_a.pk, run_b.pk)
    ids, times = result["ids"], result["times"]
    assert ids["same_run"] > ids["first"]
    assert times["same_run"] >= times["first_commit"]
    assert times["other_run"] < times["first_commit"]


def make_user(*runs):
    """A clinician assigned to the patients of `runs`: who may watch them."""
    from django.contrib.auth import get_user_model

    from tests.conftest import with_role

    user = with_role(
        get_user_model().objects.create_user(username="watcher", password="watcher-pass-123"), "Clinicians"
    )
    for run in runs:
        run.patient.clinicians.add(user)
    return user


def test_a_lost_listen_connection_is_made_again_and_nothing_is_missed(postgres_db, servers):
    """PostgreSQL restarts, a proxy drops the connection: events committed while a server was not listening
    were announced to nobody, so its streams read them from the table once it listens again."""
    run = make_run()
    _, token = ApiToken.issue(user=make_user(run), name="hosts")
    watcher = Watcher(f"{servers[0]}/api/runs/{run.pk}/stream", token)
    watcher.start()
    assert watcher.opened.wait(20)
    assert listeners() == 1  # the server with a stream listens; the idle one holds no connection at all
    (before,) = listener_pids()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [before])  # returns once it is gone
        assert cursor.fetchone()[0] is True
    unheard = [
        event_emit(run=run, kind="model_started", stage=1, model_id=f"m{i}", attempt=1).pk for i in range(5)
    ]
    deadline = time.monotonic() + 20
    while not listener_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listener_pids() not in ([], [before])  # it listens again, on a new connection
    heard = [event_emit(run=run, kind="model_finished", stage=1, model_id=f"m{i}").pk for i in range(5)]
    heard.append(event_emit(run=run, kind="status", status="complete", error="").pk)
    got = watcher.result()
    assert got[-1].event == "end"
    assert [f.id for f in got[1:-1]] == unheard + heard
