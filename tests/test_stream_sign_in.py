"""An open live stream is no reason to stay signed in: it ends with a `signed_out` event once the session's
idle timeout passes (keepalives and the stream itself are not activity), once the user signs out, or once
its API token is revoked; a session already past its idle timeout cannot open one. The pages' own requests
(polls, the banner, the run page's stream-driven refreshes) are not activity either."""

from __future__ import annotations

import asyncio
import time
from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client
from django.utils import timezone

from qeeg_site.auth import BACKGROUND_HEADER, IdleTimeoutMiddleware
from qeeg_site.models import ApiToken
from runs import feed
from tests.stream_helpers import SSEReader, asgi_request
from tests.test_stream import make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def stop_reader():
    yield
    await feed.stop_feed_for_tests()


@pytest.fixture
def run(db):
    return make_run()


@pytest.fixture
def fast(settings, monkeypatch):
    """Keepalives every 0.2 s (each one would have been activity if a stream were), checks every 0.5 s."""
    settings.SSE_KEEPALIVE_SECONDS = 0.2
    monkeypatch.setattr("qeeg_site.auth.STREAM_RECHECK_SECONDS", 0.5)


def _store():
    return import_module(settings.SESSION_ENGINE).SessionStore


@sync_to_async
def _session(user, last_request_at: float | None) -> tuple[str, str]:
    """A signed-in session whose last real request was at `last_request_at`: (its key, the Cookie header)."""
    client = Client()
    client.force_login(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    _seen(key, last_request_at)
    return key, f"{settings.SESSION_COOKIE_NAME}={key}"


def _seen(key: str, at: float | None) -> None:
    session = _store()(key)
    session[IdleTimeoutMiddleware.KEY] = at
    session.save()


async def _signed_out_within(reader: SSEReader, seconds: float) -> dict:
    """The `signed_out` event's data, skipping keepalives; then the stream must end."""
    deadline = time.monotonic() + seconds
    while True:
        frame = await reader.frame(timeout=max(deadline - time.monotonic(), 0.01))
        if frame.event is not None:
            assert frame.event == "signed_out", frame
            assert await reader.ended(2)
            return frame.data


async def _quiet_for(reader: SSEReader, seconds: float) -> None:
    """Nothing but keepalives for `seconds`: the stream is still open."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await reader.frame(timeout=left)
        except TimeoutError:
            return
        assert frame.event is None, frame


async def test_a_session_past_its_idle_timeout_cannot_open_a_stream(run, clinician, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    _, cookie = await _session(clinician, time.time() - 901)
    response = await asgi_request(f"/api/runs/{run.pk}/stream", headers={"Cookie": cookie})
    assert response.status == 401
    assert "15 minutes without activity" in response.json()["detail"]


async def test_an_open_stream_ends_when_the_idle_timeout_passes_and_activity_postpones_it(
    run, clinician, settings, fast
):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 3
    opened = time.time()
    key, cookie = await _session(clinician, opened)
    response = await asgi_request(f"/api/runs/{run.pk}/stream", headers={"Cookie": cookie})
    assert response.status == 200
    reader = SSEReader(response.body)
    assert (await reader.event()).event == "snapshot"
    await asyncio.sleep(max(opened + 1.5 - time.time(), 0))
    active = time.time()
    await sync_to_async(_seen)(key, active)  # a real request before the first deadline: the deadline moves
    await _quiet_for(reader, active + 2.8 - time.time())  # past the first deadline, many keepalives later
    data = await _signed_out_within(reader, 3)
    assert time.time() - active >= 3  # not before the idle timeout after the last real request
    assert data == {"run_id": run.pk, "detail": "You were signed out after 3 seconds without activity."}
    await response.disconnect()


async def test_an_open_stream_ends_when_its_session_signs_out(run, clinician, settings, fast):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    key, cookie = await _session(clinician, time.time())
    response = await asgi_request(f"/api/runs/{run.pk}/stream", headers={"Cookie": cookie})
    reader = SSEReader(response.body)
    assert (await reader.event()).event == "snapshot"
    await sync_to_async(_store()(key).delete)()  # what signing out in another tab does
    assert (await _signed_out_within(reader, 3))["detail"] == "You are signed out."
    await response.disconnect()


async def test_an_open_stream_ends_when_its_token_is_revoked(run, clinician, fast):
    row, token = await sync_to_async(ApiToken.issue)(user=clinician, name="stream")
    response = await asgi_request(f"/api/runs/{run.pk}/stream", headers={"Authorization": f"Bearer {token}"})
    reader = SSEReader(response.body)
    assert (await reader.event()).event == "snapshot"
    await _quiet_for(reader, 1.2)  # checked twice already, still valid
    await ApiToken.objects.filter(pk=row.pk).aupdate(revoked_at=timezone.now())
    assert "revoked" in (await _signed_out_within(reader, 3))["detail"]
    await response.disconnect()


# -- the pages' own requests ---------------------------------------------------------------------------------


def _last_request_at(client: Client) -> float | None:
    return client.session.get(IdleTimeoutMiddleware.KEY)


def test_background_requests_are_not_activity(clinician, settings, run):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    client = Client()
    client.force_login(clinician)
    session = client.session
    session[IdleTimeoutMiddleware.KEY] = long_ago = int(time.time()) - 600
    session.save()
    background = {BACKGROUND_HEADER: "true", "HX-Request": "true"}
    assert client.get(f"/runs/{run.pk}/live/", headers=background).status_code == 200
    assert client.get("/api/upstream/banner", headers=background).status_code == 200
    assert _last_request_at(client) == long_ago
    assert client.get(f"/runs/{run.pk}/").status_code == 200  # the clinician opens a page: activity
    assert _last_request_at(client) > long_ago


def test_a_background_request_past_the_timeout_sends_the_page_to_sign_in(clinician, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    client = Client()
    client.force_login(clinician)
    session = client.session
    session[IdleTimeoutMiddleware.KEY] = int(time.time()) - 901
    session.save()
    response = client.get(
        "/api/upstream/banner",
        headers={
            BACKGROUND_HEADER: "true",
            "HX-Request": "true",
            "HX-Current-URL": "http://testserver/runs/",
        },
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login/?next=%2Fruns%2F"
    assert client.get("/runs/").status_code == 302  # signed out


def test_the_pages_mark_their_own_requests_as_background(clinician_client, run):
    page = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    marked = page.count(f'hx-headers=\'{{"{BACKGROUND_HEADER}": "true"}}\'')
    # The run page's stream-driven refresh, its re-fetch on `end`/`signed_out`, and the banner's re-check.
    assert marked >= 3, page
    assert 'hx-trigger="sse:end, sse:signed_out"' in page


async def test_a_sign_out_in_another_tab_ends_its_streams_within_seconds(run, clinician, settings):
    """Signing out (the logout view, in another tab) ends every open stream of that session within
    SSE_SIGN_OUT_SECONDS, not at the stream's own minute-long recheck (STREAM_RECHECK_SECONDS, left at 60 s
    here); another session of the same person, and a token's stream, stay open until theirs end too."""
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    settings.SSE_SIGN_OUT_SECONDS = 0.3
    key, cookie = await _session(clinician, time.time())
    _, other_cookie = await _session(clinician, time.time())
    row, token = await sync_to_async(ApiToken.issue)(user=clinician, name="stream")
    url = f"/api/runs/{run.pk}/stream"
    tabs = [await asgi_request(url, headers={"Cookie": cookie}) for _ in range(2)]
    other = await asgi_request(url, headers={"Cookie": other_cookie})
    by_token = await asgi_request(url, headers={"Authorization": f"Bearer {token}"})
    readers = [SSEReader(response.body) for response in (*tabs, other, by_token)]
    for reader in readers:
        assert (await reader.event()).event == "snapshot"

    def sign_out() -> int:
        tab = Client()
        tab.cookies[settings.SESSION_COOKIE_NAME] = key
        return tab.post("/logout/").status_code

    signed_out_at = time.monotonic()
    assert await sync_to_async(sign_out)() == 302
    for reader in readers[:2]:
        assert (await _signed_out_within(reader, 3))["detail"] == "You are signed out."
    assert time.monotonic() - signed_out_at < 3
    await _quiet_for(readers[2], 1.0)  # the other session is still signed in
    await ApiToken.objects.filter(pk=row.pk).aupdate(revoked_at=timezone.now())
    assert "revoked" in (await _signed_out_within(readers[3], 3))["detail"]
    await _quiet_for(readers[2], 0.7)
    await other.disconnect()


async def test_a_user_made_inactive_ends_their_open_streams_within_seconds(
    run, clinician, other_clinician, settings
):
    """Made inactive in the admin: every stream of that person, by session or by token, ends within
    SSE_SIGN_OUT_SECONDS (the process's one look), not at the minute-long recheck; someone else's stays."""
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    settings.SSE_SIGN_OUT_SECONDS = 0.3
    await run.patient.clinicians.aadd(other_clinician)
    _, cookie = await _session(clinician, time.time())
    _, other_cookie = await _session(other_clinician, time.time())
    _, token = await sync_to_async(ApiToken.issue)(user=clinician, name="stream")
    url = f"/api/runs/{run.pk}/stream"
    mine = [
        await asgi_request(url, headers={"Cookie": cookie}),
        await asgi_request(url, headers={"Authorization": f"Bearer {token}"}),
    ]
    other = await asgi_request(url, headers={"Cookie": other_cookie})
    readers = [SSEReader(response.body) for response in (*mine, other)]
    for reader in readers:
        assert (await reader.event()).event == "snapshot"

    made_inactive_at = time.monotonic()
    await type(clinician).objects.filter(pk=clinician.pk).aupdate(is_active=False)
    assert (await _signed_out_within(readers[0], 3))["detail"] == "You are signed out."
    assert (await _signed_out_within(readers[1], 3))["detail"] == "The API token is no longer valid."
    assert time.monotonic() - made_inactive_at < 3
    await _quiet_for(readers[2], 1.0)
    await other.disconnect()


async def test_a_clinician_taken_off_the_patient_loses_its_open_stream_within_seconds(
    run, clinician, other_clinician, settings
):
    """Taken off the patient's clinicians (out of reach: the run is a 404 to them now), the stream ends
    within SSE_SIGN_OUT_SECONDS; a clinician still assigned keeps theirs."""
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    settings.SSE_SIGN_OUT_SECONDS = 0.3
    await run.patient.clinicians.aadd(other_clinician)
    _, cookie = await _session(clinician, time.time())
    _, other_cookie = await _session(other_clinician, time.time())
    url = f"/api/runs/{run.pk}/stream"
    response, other = (
        await asgi_request(url, headers={"Cookie": cookie}),
        await asgi_request(url, headers={"Cookie": other_cookie}),
    )
    reader, other_reader = SSEReader(response.body), SSEReader(other.body)
    assert (await reader.event()).event == "snapshot" and (await other_reader.event()).event == "snapshot"

    taken_off_at = time.monotonic()
    await run.patient.clinicians.aremove(clinician)
    detail = (await _signed_out_within(reader, 3))["detail"]
    assert detail == f"You no longer have access to run {run.pk}."
    assert time.monotonic() - taken_off_at < 3
    await _quiet_for(other_reader, 1.0)
    await other.disconnect()


def test_the_watch_looks_once_for_all_streams_in_a_fixed_number_of_queries(
    run, clinician, other_clinician, administrator, auditor, django_user_model
):
    """The look every SSE_SIGN_OUT_SECONDS costs the same six queries for 3 streams as for 300, and finds
    exactly the streams whose sign-in ended or whose user lost the run."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from qeeg_site.auth import SESSION, TOKEN
    from runs.stream import Watched, watched_ended

    second = make_run()  # the clinician fixture is assigned to it too; the other clinician is not
    run.patient.clinicians.add(other_clinician)
    client = Client()
    client.force_login(clinician)
    live = client.cookies[settings.SESSION_COOKIE_NAME].value

    def streams(n: int) -> set[Watched]:
        out = {
            Watched((SESSION, live), clinician.pk, run.pk),  # fine
            Watched((SESSION, "gone"), clinician.pk, run.pk),  # signed out
            Watched((SESSION, live), other_clinician.pk, second.pk),  # not assigned to the second patient
            Watched((SESSION, live), administrator.pk, second.pk),  # reaches every patient
            Watched((TOKEN, "no-such-token"), administrator.pk, run.pk),
            Watched((SESSION, live), auditor.pk, run.pk),  # a role that reads no runs (taken out of one)
        }
        out |= {
            Watched((SESSION, live), other_clinician.pk, run.pk + 1000 + i) for i in range(n)
        }  # no such run
        return out

    counts = []
    for n in (3, 300):
        with CaptureQueriesContext(connection) as queries:
            ended = watched_ended(streams(n))
        counts.append(len(queries))
        assert {(w.ref[1], w.user_pk, w.run_id) for w in ended if w.run_id < 1000} == {
            ("gone", clinician.pk, run.pk),
            (live, other_clinician.pk, second.pk),
            ("no-such-token", administrator.pk, run.pk),
            (live, auditor.pk, run.pk),
        }
        assert sum(1 for w in ended if w.run_id >= 1000) == n
    assert counts[0] == counts[1] <= 6, counts
