"""The report page shows each page image beside its extracted text, and polls while unfinished."""

from __future__ import annotations

import pytest

from patients import services
from patients.models import Patient, Report
from tests.synthetic_reports import make_qeeg_pdf, make_text_report

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def patient(db) -> Patient:
    return Patient.objects.create(label="SYNTH-301")


def stored(patient: Patient, maker, name: str, kind: str = "pdf") -> Report:
    report = Report.objects.create(patient=patient, original_name=name, sha256="0" * 64, kind=kind)
    report.folder.mkdir(parents=True)
    content = maker(report.original_path)
    return report, content


def test_ready_report_pairs_each_page_image_with_its_text(clinician_client, patient, settings):
    settings.REPORT_OCR_ENABLED = False  # OCR has its own test; here the layout matters
    report, content = stored(patient, lambda p: make_qeeg_pdf(p, pages=2, image_only_pages=()), "r.pdf")
    services.report_ingest(report_id=report.pk)
    page = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert page.count('class="page-pair"') == 2
    assert f'src="/reports/{report.pk}/pages/1.png?v=' in page
    assert "Page 2 / 2" in page and "[text layer]" in page
    assert content["pages"][1]["z_scores"]["O2"]["Beta"] in page
    assert "every 2s" not in page
    image = clinician_client.get(f"/reports/{report.pk}/pages/2.png")
    assert image.status_code == 200 and b"".join(image.streaming_content).startswith(b"\x89PNG")
    assert clinician_client.get(f"/reports/{report.pk}/thumbs/1.png").status_code == 200
    assert clinician_client.get(f"/reports/{report.pk}/pages/3.png").status_code == 404
    patient_page = clinician_client.get(f"/patients/{patient.pk}/").content.decode()
    assert f"/reports/{report.pk}/thumbs/2.png" in patient_page


def test_text_upload_shows_text_without_an_image(clinician_client, patient):
    report, content = stored(patient, lambda p: make_text_report(p), "notes.txt", kind="text")
    services.report_ingest(report_id=report.pk)
    page = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert 'class="page-pair text-only"' in page and "[text file]" in page and "<img" not in page
    assert content["pages"][0]["p300_latency_ms"] in page


def test_unfinished_report_polls_with_its_fragment_only(staff_client, patient):
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64)
    page = staff_client.get(f"/reports/{report.pk}/").content.decode()
    assert "<html" in page and 'hx-trigger="every 2s"' in page
    fragment = staff_client.get(f"/reports/{report.pk}/", **HX).content.decode()
    assert fragment.lstrip().startswith('<div id="report-body" hx-get=') and "<html" not in fragment
    Report.objects.filter(pk=report.pk).update(status="failed", error="r.pdf has no pages.")
    fragment = staff_client.get(f"/reports/{report.pk}/", **HX).content.decode()
    assert "every 2s" not in fragment and "r.pdf has no pages." in fragment and "Try again" in fragment


def test_unknown_report_is_404(clinician_client, db):
    assert clinician_client.get("/reports/999/").status_code == 404
    assert clinician_client.get("/patients/999/").status_code == 404


def test_the_original_downloads_with_its_kind_s_content_type_whatever_its_name(clinician_client, patient):
    report, _ = stored(patient, lambda p: make_qeeg_pdf(p, pages=1, image_only_pages=()), "WAVi export")
    response = clinician_client.get(f"/reports/{report.pk}/original/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="WAVi export"'
