"""Selection and export: a Stage 6 draft or the Stage 4 consolidation can be chosen, nothing else; whatever
select accepts, export accepts; export before any selection is a 409; downloads serve the files."""

from __future__ import annotations

import pytest

from patients.models import Patient
from runs.models import Artifact, Run
from tests.run_helpers import CONSOLIDATOR, COUNCIL, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def complete_run(run) -> Run:
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    return run


def _select(api, run, artifact_id):
    return api.post(
        f"/api/runs/{run.pk}/select", {"artifact_id": artifact_id}, content_type="application/json"
    )


def test_export_before_selection_is_a_conflict(api, complete_run):
    response = api.post(f"/api/runs/{complete_run.pk}/export")
    assert response.status_code == 409 and "Select" in response.json()["detail"]
    assert api.get(f"/api/runs/{complete_run.pk}/export/final.pdf").status_code == 404


@pytest.mark.parametrize("stage", [1, 2, 3, 5])
def test_only_final_drafts_and_the_consolidation_can_be_selected(api, complete_run, stage):
    artifact = complete_run.artifacts.filter(stage=stage).first()
    response = _select(api, complete_run, artifact.pk)
    assert response.status_code == 422 and f"Stage {stage}" in response.json()["detail"]
    complete_run.refresh_from_db()
    assert complete_run.selected_artifact is None


def test_an_artifact_of_another_run_or_a_failed_one_cannot_be_selected(api, complete_run, tmp_path):
    other = Run.objects.create(
        patient=complete_run.patient,
        report=complete_run.report,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
    )
    foreign = Artifact.objects.create(run=other, stage=6, model_id="gpt-5", kind="md", file_path="x")
    assert "not part of run" in _select(api, complete_run, foreign.pk).json()["detail"]
    # An artifact of a run out of the caller's reach is no artifact at all, as an id past the last is.
    hidden = Patient.objects.create(label="SYNTH-NOT-YOURS")
    Patient.clinicians.through.objects.filter(patient=hidden).delete()
    unseen = Run.objects.create(
        patient=hidden, report=complete_run.report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    out_of_reach = Artifact.objects.create(run=unseen, stage=6, model_id="gpt-5", kind="md", file_path="x")
    response = _select(api, complete_run, out_of_reach.pk)
    assert response.status_code == 422
    assert response.json()["detail"] == f"There is no artifact {out_of_reach.pk}."
    draft = complete_run.artifacts.get(stage=6, model_id="gpt-5")
    Artifact.objects.filter(pk=draft.pk).update(status="failed", error="upstream said no")
    response = _select(api, complete_run, draft.pk)
    assert response.status_code == 422 and "upstream said no" in response.json()["detail"]


@pytest.mark.parametrize("stage", [4, 6])
def test_what_select_accepts_export_accepts_and_downloads_serve(api, complete_run, data_dir, stage):
    artifact = complete_run.artifacts.filter(stage=stage).first()
    response = _select(api, complete_run, artifact.pk)
    assert response.status_code == 200 and response.json()["selected_artifact_id"] == artifact.pk
    response = api.post(f"/api/runs/{complete_run.pk}/export")
    assert response.status_code == 200, response.content
    assert response.json()["artifact_id"] == artifact.pk
    folder = data_dir / "exports" / str(complete_run.pk)
    assert (folder / "final.md").is_file() and (folder / "final.pdf").is_file()
    pdf = api.get(f"/api/runs/{complete_run.pk}/export/final.pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert b"".join(pdf.streaming_content).startswith(b"%PDF")
    md = api.get(f"/api/runs/{complete_run.pk}/export/final.md")
    body = b"".join(md.streaming_content).decode()
    first_line = artifact.path.read_text().strip().splitlines()[0]
    assert first_line in body
    detail = api.get(f"/api/runs/{complete_run.pk}").json()
    assert set(detail["exports"]) == {"final.md", "final.pdf"}
    assert api.get(f"/api/runs/{complete_run.pk}/export/other.txt").status_code == 404
