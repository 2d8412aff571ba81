"""Reading reports back through the API: metadata and status, text only once ready, paginated lists."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from patients import services
from patients.models import Patient, Report
from tests.job_helpers import runner_job
from tests.synthetic_reports import make_text_report


@pytest.fixture
def patient(db) -> Patient:
    return Patient.objects.create(label="SYNTH-401")


def test_text_and_pages_wait_for_ready_with_409(api, patient):
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64)
    detail = api.get(f"/api/reports/{report.pk}").json()
    assert detail["status"] == "pending" and detail["page_image_urls"] == []
    for url in (f"/api/reports/{report.pk}/text", f"/api/reports/{report.pk}/pages/1.png"):
        response = api.get(url)
        assert response.status_code == 409
        assert response.json()["detail"] == f"Report {report.pk} is pending; try again when it is ready."
    Report.objects.filter(pk=report.pk).update(status="failed", error="r.pdf has no pages.")
    response = api.get(f"/api/reports/{report.pk}/text")
    assert response.status_code == 409 and "r.pdf has no pages." in response.json()["detail"]


def test_text_as_json_per_page(api, patient):
    report = Report.objects.create(patient=patient, original_name="notes.txt", sha256="0" * 64, kind="text")
    report.folder.mkdir(parents=True)
    content = make_text_report(report.original_path)
    services.report_ingest(report_id=report.pk)
    body = api.get(f"/api/reports/{report.pk}/text?format=json").json()
    assert body["page_count"] == 1 and body["text"].startswith("=== PAGE 1 / 1 ===")
    (page,) = body["pages"]
    assert page["ocr_ran"] is False and page["image_url"] is None
    assert content["pages"][0]["z_scores"]["Pz"]["Alpha"] in page["sources"]["text file"]
    plain = api.get(f"/api/reports/{report.pk}/text")
    assert plain["Content-Type"].startswith("text/plain") and plain.content.decode() == body["text"]


def test_report_list_is_paginated_newest_first(api, patient):
    for n in range(3):
        Report.objects.create(patient=patient, original_name=f"r{n}.pdf", sha256="0" * 64)
    body = api.get(f"/api/patients/{patient.pk}/reports").json()
    assert body["count"] == 3
    assert [item["original_name"] for item in body["items"]] == ["r2.pdf", "r1.pdf", "r0.pdf"]


def test_polling_a_report_whose_ingester_died_shows_it_pending_and_launches_nothing(
    staff_api, patient, launched, django_capture_on_commit_callbacks
):
    silent = runner_job(kind="ingestreport", heartbeat_at=timezone.now() - timedelta(seconds=60))
    report = Report.objects.create(
        patient=patient, original_name="r.pdf", sha256="0" * 64, status="processing", job=silent
    )
    body = staff_api.get(f"/api/reports/{report.pk}").json()
    assert body["status"] == "pending" and "stopped before it finished" in body["error"]
    assert launched == []
    # Asking for it explicitly starts it again.
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_api.post(f"/api/reports/{report.pk}/reingest")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    assert launched == [("ingestreport", str(report.pk))]


def test_reingest_refuses_a_report_being_read_right_now(staff_api, patient, launched):
    report = Report.objects.create(
        patient=patient,
        original_name="r.pdf",
        sha256="0" * 64,
        status="processing",
        job=runner_job(kind="ingestreport"),
    )
    response = staff_api.post(f"/api/reports/{report.pk}/reingest")
    assert response.status_code == 409 and "being read right now" in response.json()["detail"]
    assert launched == []
