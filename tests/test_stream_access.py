"""Who may open a run's stream: a signed-in user or a bearer token whose role reads the run's patient;
anyone else gets a JSON 401 (signed out), 404 (patient out of reach) or 403 (role reads no runs)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from audit.models import AuditEvent
from runs import feed, stream
from tests.stream_helpers import SSEReader, asgi_request, session_cookie
from tests.test_stream import make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def stop_reader():
    yield
    await feed.stop_feed_for_tests()


@pytest.fixture
def run(db):
    return make_run()


async def test_anonymous_gets_json_401(run):
    response = await asgi_request(f"/api/runs/{run.pk}/stream")
    assert response.status == 401
    assert "Bearer" in response.json()["detail"]


async def test_unknown_token_gets_401(run):
    response = await asgi_request(f"/api/runs/{run.pk}/stream", headers={"Authorization": "Bearer qc_nope"})
    assert response.status == 401


async def test_bearer_token_opens_the_stream(run, api_token):
    response = await asgi_request(
        f"/api/runs/{run.pk}/stream", headers={"Authorization": f"Bearer {api_token}"}
    )
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frame = await SSEReader(response.body).event()
    assert frame.event == "snapshot"
    await response.disconnect()


async def test_session_opens_the_stream(run, clinician):
    response = await asgi_request(
        f"/api/runs/{run.pk}/stream", headers={"Cookie": await session_cookie(clinician)}
    )
    assert response.status == 200
    assert (await SSEReader(response.body).event()).event == "snapshot"
    await response.disconnect()


async def test_unknown_run_is_404_json(clinician):
    response = await asgi_request(
        "/api/runs/999999/stream", headers={"Cookie": await session_cookie(clinician)}
    )
    assert response.status == 404
    assert response.json()["detail"] == "There is no run 999999."


async def test_inactive_user_is_refused(run, clinician, api_token):
    cookie = await session_cookie(clinician)
    clinician.is_active = False
    await clinician.asave()
    for headers in ({"Cookie": cookie}, {"Authorization": f"Bearer {api_token}"}):
        response = await asgi_request(f"/api/runs/{run.pk}/stream", headers=headers)
        assert response.status == 401


async def test_only_get_and_head_are_allowed(run, clinician):
    response = await asgi_request(
        f"/api/runs/{run.pk}/stream", method="POST", headers={"Cookie": await session_cookie(clinician)}
    )
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_other_paths_still_reach_django(clinician):
    response = await asgi_request("/api/patients", headers={"Cookie": await session_cookie(clinician)})
    assert response.status == 200
    assert "items" in response.json()


async def test_a_clinician_not_assigned_to_the_patient_gets_404(run, other_clinician):
    response = await asgi_request(
        f"/api/runs/{run.pk}/stream", headers={"Cookie": await session_cookie(other_clinician)}
    )
    assert response.status == 404
    assert response.json()["detail"] == f"There is no run {run.pk}."


async def test_a_token_of_a_clinician_not_assigned_gets_404_too(run, other_clinician):
    from qeeg_site.models import ApiToken

    _, token = await sync_to_async(ApiToken.issue)(user=other_clinician)
    response = await asgi_request(f"/api/runs/{run.pk}/stream", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 404


async def test_staff_reach_the_patient_but_read_no_runs(run, staff):
    response = await asgi_request(
        f"/api/runs/{run.pk}/stream", headers={"Cookie": await session_cookie(staff)}
    )
    assert response.status == 403
    assert response.json()["detail"] == "Your role cannot read council runs."


@pytest.mark.parametrize(
    ("proxies", "forwarded", "address"),
    [([], "203.0.113.5", "127.0.0.1"), (["127.0.0.1"], "6.6.6.6, 203.0.113.5", "203.0.113.5")],
)
async def test_a_refused_opening_is_audited_from_the_scopes_address(
    run, other_clinician, settings, proxies, forwarded, address
):
    """The stream is no Django request, but its refusal is recorded like the page's, from the address the one
    rule (TRUSTED_PROXIES) reads off the ASGI scope; its own re-checks (no one asked) record nothing."""
    settings.TRUSTED_PROXIES = proxies
    cookie = await session_cookie(other_clinician)
    headers = {"Cookie": cookie, "X-Forwarded-For": forwarded, "User-Agent": "Probe/2"}
    response = await asgi_request(f"/api/runs/{run.pk}/stream", headers=headers)
    assert response.status == 404
    row = await AuditEvent.objects.filter(action="access.refused").aget()
    assert (row.user_id, row.object_type, row.object_id, row.patient_id) == (
        other_clinician.pk,
        "run",
        str(run.pk),
        run.patient_id,
    )
    assert (row.ip, row.user_agent, row.detail) == (
        address,
        "Probe/2",
        {"status": 404, "route": "GET /api/runs/<int:run_id>/stream"},
    )
    assert await sync_to_async(stream.stream_refusal)(other_clinician, run.pk) == (
        404,
        f"There is no run {run.pk}.",
    )
    assert await AuditEvent.objects.filter(action="access.refused").acount() == 1
