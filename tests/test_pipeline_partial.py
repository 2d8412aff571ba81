"""Honest partial completion: a model failing Stage 1 leaves a 2-of-3 run that completes and says so; a stage
where nobody succeeds fails the run with every reason, and starting again redoes only what is missing."""

from __future__ import annotations

import pytest

from runs import selectors
from runs.models import Artifact, Run
from tests.run_helpers import CONSOLIDATOR, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_model_failing_stage_1_leaves_a_two_of_three_run_that_completes(api, run, fake_upstream):
    fake_upstream.script("gemini-2.5-pro", failures=["model_not_found"])
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE
    failed = run.artifacts.get(stage=1, model_id="gemini-2.5-pro")
    assert (
        failed.status == Artifact.Status.FAILED and "does not exist" in failed.error and not failed.file_path
    )
    # The rest of the run goes on without it: two reviewers each review the one other analysis.
    assert not run.artifacts.filter(stage__gt=1, model_id="gemini-2.5-pro").exists()
    for stage in (2, 3, 5, 6):
        assert fake_upstream.count(stage=stage) == 2
    for review in run.artifacts.filter(stage=2):
        assert len(selectors.artifact_parsed(review).reviews) == 1
    body = api.get(f"/api/runs/{run.pk}").json()
    assert body["council_summary"].startswith("2 of 3 models (gemini-2.5-pro failed Stage 1:")
    assert body["stages"][0]["state"] == "partial" and body["stages"][0]["summary"] == "2 of 3 models"
    stage1 = {m["model_id"]: m for m in body["stages"][0]["models"]}
    assert stage1["gemini-2.5-pro"]["status"] == "failed" and stage1["gemini-2.5-pro"]["error"]
    assert "2 of 3 models" in output and "gemini-2.5-pro" in output


def test_a_stage_nobody_finishes_fails_the_run_and_a_restart_redoes_only_that(run, fake_upstream):
    fake_upstream.script(CONSOLIDATOR, failures=["sleep:0", "sleep:0", "sleep:0", "model_not_found"])
    code, _ = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 1 and run.status == Run.Status.FAILED and run.stages_done == 3
    assert "Stage 4 (Consolidation): every model failed" in run.error and CONSOLIDATOR in run.error
    before = {stage: fake_upstream.count(stage=stage) for stage in (1, 2, 3)}
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert {stage: fake_upstream.count(stage=stage) for stage in (1, 2, 3)} == before
    assert fake_upstream.count(stage=4) == 2


def test_a_lone_surviving_analysis_skips_peer_review_and_still_completes(run, fake_upstream):
    fake_upstream.script("gpt-5", failures=["model_not_found"])
    fake_upstream.script("gemini-2.5-pro", failures=["model_not_found"])
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0, output
    assert fake_upstream.count(stage=2) == 0
    progress = selectors.run_progress(run)
    assert progress["council_summary"].startswith("1 of 3 models")
    assert progress["stages"][1]["state"] == "skipped"
