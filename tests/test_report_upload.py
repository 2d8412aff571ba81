"""Uploading answers at once with pending reports and hands ingestion to a child process."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients import services
from patients.models import Patient, Report
from tests.synthetic_reports import make_long_pdf, make_qeeg_pdf, make_text_report


@pytest.fixture
def patient(db) -> Patient:
    return Patient.objects.create(label="SYNTH-001")


def upload(client, patient: Patient, *paths: Path):
    files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in paths]
    return client.post(f"/api/patients/{patient.pk}/reports", {"files": files})


def test_upload_answers_at_once_with_pending_and_launches_ingestion(
    staff_api, patient, tmp_path, launched, django_capture_on_commit_callbacks
):
    pdf = tmp_path / "report.pdf"
    make_qeeg_pdf(pdf, pages=2, image_only_pages=())
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(staff_api, patient, pdf)
    assert response.status_code == 201, response.content
    (body,) = response.json()
    assert body["status"] == "pending"
    assert body["page_count"] == 2
    assert body["original_name"] == "report.pdf"
    report = Report.objects.get(pk=body["id"])
    assert report.status == Report.Status.PENDING
    assert launched == [("ingestreport", str(report.pk))]
    # The original is stored whole, under the report's id, before the answer goes out.
    assert report.original_path.read_bytes() == pdf.read_bytes()
    assert len(report.sha256) == 64


def test_several_files_make_several_reports_ingested_by_one_process(
    staff_api, patient, tmp_path, launched, django_capture_on_commit_callbacks
):
    pdf = tmp_path / "a.pdf"
    make_long_pdf(pdf, pages=1)
    text = tmp_path / "notes.txt"
    make_text_report(text)
    markdown = tmp_path / "summary.md"
    make_text_report(markdown, markdown=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(staff_api, patient, pdf, text, markdown)
    assert response.status_code == 201, response.content
    kinds = sorted(item["kind"] for item in response.json())
    assert kinds == ["markdown", "pdf", "text"]
    ids = [str(item["id"]) for item in response.json()]
    assert launched == [("ingestreport", *ids)]


def test_text_upload_ingests_to_one_labelled_page(staff_api, patient, tmp_path, launched):
    text = tmp_path / "notes.md"
    content = make_text_report(text, markdown=True)
    (body,) = upload(staff_api, patient, text).json()
    report = services.report_ingest(report_id=body["id"])
    assert report is not None and report.status == Report.Status.READY
    stored = staff_api.get(f"/api/reports/{report.pk}/text").content.decode()
    assert stored.startswith("=== PAGE 1 / 1 ===\n[text file]\n# Synthetic qEEG report")
    for number in content["pages"][0]["numbers"]:
        assert number in stored
    assert staff_api.get(f"/api/reports/{report.pk}").json()["page_image_urls"] == []


def test_original_comes_back_byte_for_byte(staff_api, patient, tmp_path, launched):
    pdf = tmp_path / "vendor export.pdf"
    make_long_pdf(pdf, pages=1)
    (body,) = upload(staff_api, patient, pdf).json()
    response = staff_api.get(body["original_url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content) == pdf.read_bytes()
    assert "vendor export.pdf" in response["Content-Disposition"]


def test_a_failed_launch_leaves_the_report_pending_for_the_next_start(
    staff_api, patient, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    def refuse(*args, **kwargs):
        raise OSError("no processes left")

    monkeypatch.setattr("jobs.launcher.launch_command", refuse)
    pdf = tmp_path / "r.pdf"
    make_long_pdf(pdf, pages=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(staff_api, patient, pdf)
    assert response.status_code == 201
    assert Report.objects.get().status == Report.Status.PENDING


def test_a_large_batch_still_starts_its_ingestion(data_dir, monkeypatch):
    """The log file was named after every id in the batch; past 255 bytes the launch itself failed."""
    from jobs import launcher

    started: list[list[str]] = []

    class FakePopen:
        pid = 4242

        def __init__(self, command, **kwargs):
            started.append(command)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(launcher.subprocess, "Popen", FakePopen)
    ids = [str(n) for n in range(100_000, 100_100)]
    assert launcher.launch_command("ingestreport", *ids) == 4242
    assert started[0][-100:] == ids
    (log,) = (data_dir / "logs").iterdir()
    assert log.name.startswith("ingestreport-100000-100001-") and len(log.name) < 160
