"""Who may open a run's stream: a signed-in user or a bearer token; everyone else gets a JSON 401."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from runs.stream import close_all_streams_for_tests
from tests.stream_helpers import SSEReader
from tests.test_stream import make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def stop_reader():
    yield
    await close_all_streams_for_tests()


@pytest.fixture
def run(db):
    return make_run()


async def test_anonymous_gets_json_401(run):
    response = await AsyncClient().get(f"/api/runs/{run.pk}/stream")
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"]


async def test_unknown_token_gets_401(run):
    response = await AsyncClient().get(
        f"/api/runs/{run.pk}/stream", headers={"Authorization": "Bearer qc_nope"}
    )
    assert response.status_code == 401


async def test_bearer_token_opens_the_stream(run, api_token):
    # Per request: AsyncClient(headers=…) mangles the name into Http-Authorization.
    response = await AsyncClient().get(
        f"/api/runs/{run.pk}/stream", headers={"Authorization": f"Bearer {api_token}"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    frame = await SSEReader(response.streaming_content).event()
    assert frame.event == "snapshot"
    await response.streaming_content.aclose()


async def test_unknown_run_is_404_json(clinician):
    client = AsyncClient()
    await client.aforce_login(clinician)
    response = await client.get("/api/runs/999999/stream")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


async def test_inactive_user_is_refused(run, clinician):
    client = AsyncClient()
    await client.aforce_login(clinician)
    clinician.is_active = False
    await clinician.asave()
    response = await client.get(f"/api/runs/{run.pk}/stream")
    assert response.status_code == 401


async def test_only_get_is_allowed(run, clinician):
    client = AsyncClient()
    await client.aforce_login(clinician)
    response = await client.post(f"/api/runs/{run.pk}/stream")
    assert response.status_code == 405
