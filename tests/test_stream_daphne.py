"""The live stream through a real daphne process, as a browser sees it: drop the connection, let the runner
write meanwhile, come back with Last-Event-ID, and get exactly what was missed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from runs.events import event_emit
from tests.stream_helpers import daphne_server, frames, next_event
from tests.test_stream import make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(subprocess_env: dict[str, str]) -> Iterator[str]:
    env = dict(subprocess_env, SSE_POLL_SECONDS="0.05", SSE_KEEPALIVE_SECONDS="0.3", LOG_LEVEL="WARNING")
    with daphne_server(env) as url:
        yield url


def test_dropped_connection_resumes_with_last_event_id_and_nothing_missed(server, api_token):
    run = make_run()
    headers = {"Authorization": f"Bearer {api_token}"}
    timeout = httpx.Timeout(5.0)
    with httpx.Client(base_url=server, headers=headers, timeout=timeout) as client:
        with client.stream("GET", f"/api/runs/{run.pk}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert {"no-cache", "no-store"} <= set(
                response.headers["cache-control"].replace(" ", "").split(",")
            )
            stream = frames(response)
            assert next_event(stream).event == "snapshot"
            first = event_emit(run=run, kind="stage_started", stage=1, models=["gpt-5"])
            got = next_event(stream)
            assert (got.event, got.id) == ("stage_started", first.pk)
        # Offline: the runner carries on.
        missed = [
            event_emit(run=run, kind="model_started", stage=1, model_id="gpt-5", attempt=n).pk for n in (1, 2)
        ]
        with client.stream(
            "GET", f"/api/runs/{run.pk}/stream", headers={"Last-Event-ID": str(first.pk)}
        ) as response:
            stream = frames(response)
            assert [next_event(stream).id for _ in missed] == missed
            last = event_emit(run=run, kind="status", status="complete", error="")
            status = next_event(stream)
            assert (status.event, status.id, status.data["data"]["status"]) == ("status", last.pk, "complete")
            assert next_event(stream).event == "end"
            assert list(stream) == []  # the server closed the stream


def test_idle_stream_through_daphne_gets_keepalives_and_refuses_strangers(server, api_token):
    run = make_run()
    anonymous = httpx.get(f"{server}/api/runs/{run.pk}/stream", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"].startswith("Sign in")
    headers = {"Authorization": f"Bearer {api_token}"}
    with httpx.stream("GET", f"{server}/api/runs/{run.pk}/stream", headers=headers, timeout=5) as response:
        stream = frames(response)
        assert next_event(stream).event == "snapshot"
        started = time.monotonic()
        frame = next(stream)
        assert frame.comment == "keepalive" and frame.event is None
        assert time.monotonic() - started < 2  # SSE_KEEPALIVE_SECONDS is 0.3 here
