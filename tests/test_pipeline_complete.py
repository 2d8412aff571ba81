"""A three-model run against the fake upstream completes, with every artifact where the contract says."""

from __future__ import annotations

import hashlib
import json

import pytest

from council.schemas import FinalReview, PeerReview
from runs import selectors
from runs.models import Artifact, Run, RunEvent
from tests.run_helpers import CONSOLIDATOR, COUNCIL, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_three_model_run_completes_with_every_artifact_on_disk(run, fake_upstream, data_dir):
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0, output
    assert run.status == Run.Status.COMPLETE and run.stages_done == 6 and run.error == ""
    artifacts = list(run.artifacts.all())
    expected = {(stage, model) for stage in (1, 2, 3, 5, 6) for model in COUNCIL} | {(4, CONSOLIDATOR)}
    assert {(a.stage, a.model_id) for a in artifacts} == expected
    for artifact in artifacts:
        ext = "json" if artifact.stage in (2, 5) else "md"
        assert artifact.status == Artifact.Status.OK
        assert (
            artifact.path
            == data_dir / "artifacts" / str(run.pk) / f"stage-{artifact.stage}" / f"{artifact.model_id}.{ext}"
        )
        data = artifact.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact.sha256
        assert artifact.completion_tokens and artifact.latency_ms is not None and artifact.attempts >= 1
        assert artifact.endpoint in ("chat/completions", "responses")
        assert b"<!-- END OF REPORT -->" not in data
        if artifact.stage == 2:
            review = PeerReview.model_validate_json(data)
            own = {m: label for label, m in run.label_map.items()}[artifact.model_id]
            assert sorted(r.analysis_label for r in review.reviews) == sorted(set(run.label_map) - {own})
        if artifact.stage == 5:
            FinalReview.model_validate(json.loads(data))
    assert not list((data_dir / "artifacts").rglob("*.tmp"))
    progress = selectors.run_progress(run)
    assert progress["council_summary"] == "3 of 3 models"
    assert [s["state"] for s in progress["stages"]] == ["done"] * 6
    kinds = list(RunEvent.objects.filter(run=run).values_list("kind", flat=True))
    assert kinds.count("stage_started") == 6 and kinds.count("model_finished") == 16
    assert kinds[-1] == "status"
    assert "Stage 6" in output or "6 Final draft" in output


def test_each_stage_is_asked_once_per_model(run, fake_upstream):
    run_pipeline_here(run)
    for stage in (1, 2, 3, 5, 6):
        assert fake_upstream.count(stage=stage) == 3, stage
    assert fake_upstream.count(stage=4) == 1
    assert fake_upstream.count(stage=4, model=CONSOLIDATOR) == 1
