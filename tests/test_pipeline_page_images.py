"""Page images go to Stage 1 beside the text when COUNCIL_PAGE_IMAGES asks for them, and nowhere else."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import Report
from patients.services import report_ingest, report_upload
from runs import services
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, run_pipeline_here
from tests.synthetic_reports import make_qeeg_pdf

pytestmark = pytest.mark.django_db(transaction=True)


def test_stage_1_gets_the_first_page_images_when_configured(fake_upstream, tmp_path, settings):
    settings.REPORT_OCR_ENABLED = False  # the text layer is enough here; OCR is the ingestion tests' business
    settings.COUNCIL_PAGE_IMAGES = 2
    patient = make_patient()
    make_qeeg_pdf(tmp_path / "r.pdf", pages=3, image_only_pages=())
    upload = SimpleUploadedFile("r.pdf", (tmp_path / "r.pdf").read_bytes(), content_type="application/pdf")
    with mock.patch("qeeg_site.launcher.launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    run = services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    code, output = run_pipeline_here(run)
    assert code == 0, output
    for call in fake_upstream.calls:
        if call.stage is None:
            continue
        content = call.body["messages"][1]["content"]
        if call.stage == 1:
            assert content[0]["type"] == "text" and "=== PAGE 3 / 3 ===" in content[0]["text"]
            images = [part["image_url"]["url"] for part in content[1:]]
            assert len(images) == 2 and all(url.startswith("data:image/png;base64,iVBOR") for url in images)
        else:
            assert isinstance(content, str)
