"""The `world` fixture: one patient with everything a route can answer about, for the access tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from accounts.models import profile_of
from patients.models import Patient, PatientIdentifier, Redaction, Report
from patients.services import report_ingest, report_upload
from runs import versions
from runs.models import Artifact, Run
from tests.run_helpers import CONSOLIDATOR, COUNCIL
from tests.synthetic_reports import make_long_pdf


@dataclass
class World:
    patient: Patient
    report: Report
    run: Run
    artifact: Artifact
    identifier: PatientIdentifier
    redaction: Redaction


@pytest.fixture
def world(clinician, tmp_path, data_dir, launched, fake_upstream, settings) -> World:
    """A patient assigned to `clinician`, a ready one-page PDF report, a complete run with a selectable final
    draft, already exported: every route has something real to answer about."""
    # Page images go to the council (painted), so the preview's page image has something to show.
    settings.DEID_PAGE_IMAGES, settings.COUNCIL_PAGE_IMAGES = "paint", 1
    patient = Patient.objects.create(label="SYNTH-ACL", age=40)
    make_long_pdf(tmp_path / "r.pdf", pages=1)
    [report] = report_upload(
        patient=patient, files=[SimpleUploadedFile("r.pdf", (tmp_path / "r.pdf").read_bytes())]
    )
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.READY, report.error
    run = Run.objects.create(
        patient=patient,
        report=report,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        status=Run.Status.COMPLETE,
        stages_done=6,
        current_stage=6,
        finished_at=timezone.now(),
    )
    relative = f"artifacts/{run.pk}/stage-6/gpt-5.md"
    (data_dir / relative).parent.mkdir(parents=True)
    (data_dir / relative).write_text("# Final draft\n\nSynthetic text.\n")
    artifact = Artifact.objects.create(run=run, stage=6, model_id="gpt-5", kind="md", file_path=relative)
    run.selected_artifact = artifact
    run.save(update_fields=["selected_artifact"])
    run.exports_dir.mkdir(parents=True)
    (run.exports_dir / "final.md").write_text("# Final\n")
    (run.exports_dir / "final.pdf").write_bytes(b"%PDF-1.4\n")
    versions.version_save(run=run, text="# Final draft\n\nSynthetic text, edited.\n", user=clinician)
    # Signed, with a patient version written from it, so the patient-version routes have one to answer about.
    profile = profile_of(clinician)
    profile.display_name = "Dr Synthetic"
    profile.save()
    signed = versions.version_sign(run=run, number=1, user=clinician)
    versions.version_write(
        run=run,
        kind=versions.PATIENT,
        base=artifact,
        source=signed,
        text="# Your qEEG results\n\nYou had a recording.\n",
        model_id="gpt-5",
    )
    identifier = PatientIdentifier.objects.create(patient=patient, kind="name", value="Synthetic Person")
    redaction = Redaction.objects.create(patient=patient, report=report, phrase="synthetic phrase")
    return World(patient, report, run, artifact, identifier, redaction)
