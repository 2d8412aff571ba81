"""Helpers for run tests: a patient with a ready report (through the real upload + ingestion services), and
running `runpipeline` in this process the way the launcher would in a child."""

from __future__ import annotations

import io
from pathlib import Path
from unittest import mock

from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from patients.models import Patient, Report
from patients.services import report_ingest, report_upload
from runs.models import Run
from tests.synthetic_reports import make_text_report

COUNCIL = ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"]
CONSOLIDATOR = "claude-sonnet-4-5"


def make_patient(label: str = "SYNTH-001") -> Patient:
    return Patient.objects.create(
        label=label, age=9, sex="female", medications="none", referral_reason="attention concerns"
    )


def make_ready_report(patient: Patient, folder: Path, *, seed: int = 11) -> Report:
    path = folder / f"report-{seed}.txt"
    make_text_report(path, seed=seed)
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="text/plain")
    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.READY, report.error
    return report


def run_pipeline_here(run: Run | int, *args: str) -> tuple[int, str]:
    """`manage.py runpipeline <id> …` in this process; returns (exit code, terminal output)."""
    run_id = run if isinstance(run, int) else run.pk
    out = io.StringIO()
    try:
        call_command("runpipeline", str(run_id), *args, stdout=out, stderr=out)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()
