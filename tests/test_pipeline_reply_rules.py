"""The reply rules end to end against the fake: truncated markdown is continued (marker never stored), invalid
JSON is sent back and then accepted, and a model that never sends valid JSON fails that stage only."""

from __future__ import annotations

import pytest

from runs import selectors
from runs.models import Artifact, Run
from tests.run_helpers import run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_truncated_markdown_is_continued_and_joined(run, fake_upstream):
    fake_upstream.script("gpt-5", truncate_times=1)
    code, output = run_pipeline_here(run)
    assert code == 0, output
    assert fake_upstream.count(stage=1, model="gpt-5") == 2
    assert fake_upstream.count(stage=1, model="claude-sonnet-4-5") == 1
    artifact = run.artifacts.get(stage=1, model_id="gpt-5")
    text = artifact.path.read_text()
    assert "<!-- END OF REPORT -->" not in text and artifact.error == ""
    continuation = [c for c in fake_upstream.calls if c.stage == 1 and c.model == "gpt-5"][1]
    assert continuation.body["messages"][-1]["content"].startswith("Continue exactly where you stopped")


def test_invalid_json_is_retried_then_accepted(run, fake_upstream, settings):
    settings.COUNCIL_JSON_RETRIES = 1
    fake_upstream.script("gpt-5", invalid_json_times=1)
    code, output = run_pipeline_here(run)
    assert code == 0, output
    assert (
        fake_upstream.count(stage=2, model="gpt-5") == 2 and fake_upstream.count(stage=5, model="gpt-5") == 2
    )
    review = run.artifacts.get(stage=2, model_id="gpt-5")
    assert review.status == Artifact.Status.OK and review.attempts >= 2


def test_a_model_that_never_sends_valid_json_fails_that_stage_only(run, fake_upstream, settings):
    settings.COUNCIL_JSON_RETRIES = 2
    fake_upstream.script("gpt-5", invalid_json_times=99)
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert fake_upstream.count(stage=2, model="gpt-5") == 3
    failed = run.artifacts.get(stage=2, model_id="gpt-5")
    assert (
        failed.status == Artifact.Status.FAILED
        and "invalid peer review JSON after 3 attempt(s)" in failed.error
    )
    assert run.artifacts.get(stage=3, model_id="gpt-5").status == Artifact.Status.OK
    summary = selectors.council_summary(run)
    assert summary.startswith("3 of 3 models (gpt-5 failed Stage 2: invalid peer review JSON")
