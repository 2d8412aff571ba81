"""The ingestion log (data/logs/ingestreport-N.log is this command's output) names a failed report by its id,
not by its file name, which often carries the patient's name."""

from __future__ import annotations

import io
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from patients.models import Patient, Report
from patients.services import report_upload
from tests.synthetic_reports import make_corrupt_pdf, make_long_pdf

pytestmark = pytest.mark.django_db


def test_a_failed_ingestion_is_logged_without_the_file_name(tmp_path):
    patient = Patient.objects.create(label="SYNTH-LOG")
    make_long_pdf(tmp_path / "Mueller_Anna_qEEG.pdf", pages=1)
    data = (tmp_path / "Mueller_Anna_qEEG.pdf").read_bytes()
    upload = SimpleUploadedFile("Mueller_Anna_qEEG.pdf", data, content_type="application/pdf")
    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    make_corrupt_pdf(report.original_path)  # damaged after the upload's checks: the ingestion fails
    out = io.StringIO()
    call_command("ingestreport", str(report.pk), stdout=out, stderr=out)
    report.refresh_from_db()
    assert report.status == Report.Status.FAILED and "Mueller_Anna_qEEG.pdf" in report.error  # the page says
    assert f"report {report.pk}: failed" in out.getvalue()
    assert "Mueller" not in out.getvalue() and "Anna" not in out.getvalue()
