"""The ASGI handler (qeeg_site/asgi_handler.py): a request's sync work runs on a thread kept from request to
request, so its database connection is kept too; a request never waits for another's thread; a thread given
back past the number kept closes its connection."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path

from qeeg_site import asgi_handler
from qeeg_site.asgi_handler import SyncASGIHandler, _RequestThread

pytestmark = pytest.mark.django_db(transaction=True)

# What the views below saw: (their thread, the DB-API connection object) per request.
seen: list[tuple[int, object]] = []
release = threading.Event()
inside = threading.Event()


@login_not_required
def where(request):
    from patients.models import Patient

    Patient.objects.exists()  # a query, so the thread has its connection open
    seen.append((threading.current_thread(), connection.connection))
    return HttpResponse("ok")


@login_not_required
def blocks(request):
    inside.set()
    release.wait(10)
    seen.append((threading.current_thread(), None))
    return HttpResponse("done")


urlpatterns = [path("where", where), path("blocks", blocks)]


@pytest.fixture(autouse=True)
def here():
    seen.clear()
    release.clear()
    inside.clear()
    with override_settings(ROOT_URLCONF=__name__):
        yield


def _scope(url: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


async def _get(handler, url: str) -> bytes:
    communicator = ApplicationCommunicator(handler, _scope(url))
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(10)
    assert start["status"] == 200, start
    body = await communicator.receive_output(10)
    await communicator.wait(10)
    return body["body"]


async def test_requests_one_after_another_share_a_thread_and_its_database_connection():
    handler = SyncASGIHandler()
    for _ in range(3):
        assert await _get(handler, "/where") == b"ok"
    threads = {thread for thread, _ in seen}
    connections_used = {id(conn) for _, conn in seen}
    assert len(threads) == 1 and threading.current_thread() not in threads
    assert len(connections_used) == 1  # Django's own handler: a new thread, so a new connection, each time


async def test_a_request_does_not_wait_for_another_requests_thread():
    handler = SyncASGIHandler()
    slow = asyncio.ensure_future(_get(handler, "/blocks"))
    while not inside.is_set():
        await asyncio.sleep(0.01)
    assert await asyncio.wait_for(_get(handler, "/where"), 10) == b"ok"  # while the first still runs
    release.set()
    assert await slow == b"done"
    assert seen[0][0] != seen[1][0]
    assert len(handler._idle) == 2  # both given back, idle


async def test_past_the_threads_kept_a_thread_given_back_closes_its_connection_and_ends(monkeypatch):
    monkeypatch.setattr(asgi_handler, "KEEP_IDLE", 0)
    handler = SyncASGIHandler()
    await _get(handler, "/where")
    await _get(handler, "/where")
    (first, first_conn), (second, _) = seen
    assert first is not second and handler._idle == []
    first.join(5)
    assert not first.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):  # closed by its own thread before it ended
        first_conn.execute("SELECT 1")


def test_a_thread_counts_the_work_not_finished_yet():
    thread = _RequestThread()
    go = threading.Event()
    try:
        future = thread.submit(go.wait, 10)
        queued = thread.submit(lambda: None)
        assert thread.unfinished == 2
        go.set()
        future.result(10)
        queued.result(10)
        # The count drops in the future's done callback, which runs just after result() wakes its waiter
        # (and before asyncio hears of it: its callback is added after ours).
        for _ in range(100):
            if thread.unfinished == 0:
                break
            threading.Event().wait(0.01)
        assert thread.unfinished == 0
    finally:
        thread.shutdown()
