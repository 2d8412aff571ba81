"""Helpers for run tests: a patient with a ready report (through the real upload + ingestion services), and
running `runpipeline` in this process the way the launcher would in a child."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from patients.models import Patient, Report
from patients.services import report_ingest, report_upload
from runs.models import Artifact, Run
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
    return upload_and_read(patient, path, content_type="text/plain")


def upload_and_read(patient: Patient, path: Path, *, content_type: str) -> Report:
    """`path` uploaded for the patient and read by the real ingestion, here (no child process)."""
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type=content_type)
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


def runner_process(run_id: int, env: dict[str, str]) -> subprocess.Popen:
    """`manage.py runpipeline <id>` as a real child process (as the launcher starts it), its output piped."""
    return subprocess.Popen(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "runpipeline", str(run_id)],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def add_artifact(run: Run, *, stage: int, model_id: str, text: str | None, error: str = "") -> Artifact:
    """An artifact of `run` with `text` on disk where the pipeline would put it (None: a failed call)."""
    kind = Artifact.Kind.JSON if stage in (2, 5) else Artifact.Kind.MARKDOWN
    relative = f"artifacts/{run.pk}/stage-{stage}/{model_id}.{kind}"
    if text is not None:
        path = settings.DATA_DIR / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Artifact.objects.create(
        run=run,
        stage=stage,
        model_id=model_id,
        kind=kind,
        file_path=relative if text is not None else "",
        sha256=hashlib.sha256((text or "").encode()).hexdigest(),
        status=Artifact.Status.OK if text is not None else Artifact.Status.FAILED,
        error=error,
    )
