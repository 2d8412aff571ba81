"""A 401 mid-run stops the run as needs_auth with the message; starting again resumes it without asking
again for anything already finished."""

from __future__ import annotations

import pytest

from runs.models import Run
from tests.run_helpers import run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_401_in_stage_3_gives_needs_auth_and_starting_again_resumes(api, fake_upstream, run, launched):
    # gpt-5's third call (its Stage 3 revision) is refused: the provider sign-in expired.
    fake_upstream.script("gpt-5", failures=["sleep:0", "sleep:0", "401"])
    code, _ = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 1 and run.status == Run.Status.NEEDS_AUTH
    assert "sign in" in run.error and "unauthorized" in run.error
    assert run.stages_done == 2
    body = api.get(f"/api/runs/{run.pk}").json()
    assert body["status"] == "needs_auth" and body["error"] == run.error

    response = api.post(f"/api/runs/{run.pk}/start")
    assert response.status_code == 202 and response.json()["started"] is True
    code, output = run_pipeline_here(int(launched[-1][1]))
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE and run.error == "", output
    assert fake_upstream.count(stage=1) == 3 and fake_upstream.count(stage=2) == 3
    # Stage 3: the two that finished before the 401 are kept; only gpt-5 is asked again.
    assert fake_upstream.count(stage=3, model="gpt-5") == 2
    assert fake_upstream.count(stage=3, model="gemini-2.5-pro") == 1
    assert "resuming after Stage 2" in output
