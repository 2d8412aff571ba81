"""Reports left pending, or processing by a job whose runner went silent, are picked up again at start;
crash leftovers in the data folder are cleaned and an interrupted folder swap is repaired. Pages showing
such a report say so and launch nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from patients import services
from patients.models import Patient, Report
from qeeg_site import startup
from tests.job_helpers import runner_job
from tests.synthetic_reports import make_long_pdf


@pytest.fixture(autouse=True)
def no_ocr(settings) -> None:
    # These tests are about state and files; OCR has its own test.
    settings.REPORT_OCR_ENABLED = False


@pytest.fixture
def patient(db) -> Patient:
    return Patient.objects.create(label="SYNTH-RESUME")


def stored_report(patient: Patient, **fields) -> Report:
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64, **fields)
    report.folder.mkdir(parents=True)
    make_long_pdf(report.original_path, pages=1)
    return report


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def silent_job(**fields) -> Job:
    """An ingestion job whose runner stopped beating a minute ago (killed, out of memory, host gone)."""
    return runner_job(kind="ingestreport", heartbeat_at=timezone.now() - timedelta(seconds=60), **fields)


def test_resume_relaunches_pending_and_orphaned_processing_reports(
    patient, launched, django_capture_on_commit_callbacks
):
    pending = stored_report(patient)
    orphaned = stored_report(patient, status=Report.Status.PROCESSING, job=silent_job())
    # Processing with no job at all: left by a version before jobs, or a row written by hand.
    unowned = stored_report(patient, status=Report.Status.PROCESSING)
    # Alive on another host: a pid means nothing here, the fresh heartbeat is what counts.
    alive = stored_report(
        patient, status=Report.Status.PROCESSING, job=runner_job(kind="ingestreport", host="elsewhere", pid=1)
    )
    ready = stored_report(patient, status=Report.Status.READY)

    with django_capture_on_commit_callbacks(execute=True):
        lines = list(startup.recover())
    assert lines == [
        "2 report(s) whose ingestion stopped without a word are pending again.",
        "Resumed ingestion of 3 report(s) left unfinished.",
    ]

    assert launched == [("ingestreport", str(pending.pk), str(orphaned.pk), str(unowned.pk))]
    orphaned.refresh_from_db()
    assert orphaned.status == Report.Status.PENDING and orphaned.job.status == Job.Status.STARTING
    assert Job.objects.filter(status=Job.Status.LOST).count() == 1
    alive.refresh_from_db()
    assert alive.status == Report.Status.PROCESSING
    ready.refresh_from_db()
    assert ready.status == Report.Status.READY


def test_resume_with_nothing_to_do_launches_nothing(patient, launched):
    stored_report(patient, status=Report.Status.READY)
    assert services.reports_resume_pending() == 0
    assert launched == []


def test_resume_sweeps_crash_leftovers_and_repairs_an_interrupted_swap(patient, launched, data_dir):
    kept = stored_report(patient, status=Report.Status.READY)
    root = data_dir / "reports"
    gone = dead_pid()
    (root / f".upload-{gone}-abc").mkdir()
    (root / f".ingest-{kept.pk}-{gone}").mkdir()
    (root / "999").mkdir()  # renamed into place, but its transaction never committed
    # A swap that crashed between its two renames: only the old folder exists.
    swapped = stored_report(patient, status=Report.Status.READY)
    swapped.folder.rename(root / f".old-{swapped.pk}")

    services.reports_sweep_files()

    assert sorted(p.name for p in root.iterdir()) == sorted([str(kept.pk), str(swapped.pk), ".orphaned"])
    assert swapped.original_path.exists()
    # A folder without a row is set aside, never deleted: it might belong to another database.
    assert [p.name.split("-")[0] for p in (root / ".orphaned").iterdir()] == ["999"]


def test_only_one_process_claims_a_report(patient):
    report = stored_report(patient)
    first, second = runner_job(kind="ingestreport"), runner_job(kind="ingestreport")
    assert services.report_claim(report_id=report.pk, job=first) is True
    assert services.report_claim(report_id=report.pk, job=second) is False
    report.refresh_from_db()
    assert report.job == first
    assert services.report_ingest(report_id=report.pk, job=second) is None


def test_sigterm_puts_the_report_back_to_pending(patient, monkeypatch, data_dir):
    report = stored_report(patient)

    def interrupted(*args, **kwargs):
        raise services.Interrupted()

    monkeypatch.setattr("patients.sandbox.ingest_pdf_limited", interrupted)
    with pytest.raises(services.Interrupted):
        services.report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.PENDING
    assert sorted(p.name for p in (data_dir / "reports").iterdir()) == [str(report.pk)]


def test_ingestion_error_marks_failed_with_a_readable_reason(patient, data_dir):
    report = stored_report(patient)
    report.original_path.unlink()
    result = services.report_ingest(report_id=report.pk)
    assert result.status == Report.Status.FAILED
    assert result.error == "The uploaded file is missing from the data folder."
    assert not list((data_dir / "reports").glob(".ingest-*"))


def test_reingest_replaces_the_folder_whole(patient, data_dir):
    report = stored_report(patient)
    assert services.report_ingest(report_id=report.pk).status == Report.Status.READY
    (report.folder / "stale-file").write_text("from an older ingestion")
    assert services.report_reingest(report=report) is True
    report = services.report_ingest(report_id=report.pk)
    assert report.status == Report.Status.READY
    assert sorted(p.name for p in report.folder.iterdir()) == [
        "facts.json",
        "original.pdf",
        "pages",
        "pages.json",
        "text.md",
        "thumbs",
    ]
    assert sorted(p.name for p in (data_dir / "reports").iterdir()) == [str(report.pk)]


@pytest.mark.django_db(transaction=True)
def test_ingestreport_runs_in_its_own_process(subprocess_env, data_dir, settings):
    patient = Patient.objects.create(label="SYNTH-PROC")
    report = stored_report(patient)
    subprocess_env["REPORT_OCR_ENABLED"] = "false"
    done = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "ingestreport", str(report.pk)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"report {report.pk}: ready, 1 page(s)" in done.stdout
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    assert report.processed_at is not None
    # The process claimed its own job (nobody launched one), with this host's id, and ended it.
    assert report.job.kind == "ingestreport" and report.job.status == Job.Status.DONE
    assert report.job.host == settings.QEEG_HOST_ID and report.job.pid not in (None, os.getpid())
    assert (
        "=== PAGE 1 / 1 ===\n[text layer]\nSynthetic filler page 1" in (report.folder / "text.md").read_text()
    )


def test_a_page_showing_a_report_whose_ingester_died_says_so_and_launches_nothing(
    staff_client, patient, launched, django_capture_on_commit_callbacks
):
    """Killed (out of memory, kill -9) between restarts: the polling page shows it is not being read, and
    only an explicit Try again (a POST) starts ingestion again."""
    job = silent_job()
    waiting = stored_report(patient, job=job)  # the rest of the dead process's batch
    orphaned = stored_report(patient, status=Report.Status.PROCESSING, job=job)
    page = staff_client.get(f"/patients/{patient.pk}/reports/", HTTP_HX_REQUEST="true")
    assert page.status_code == 200
    assert launched == []
    orphaned.refresh_from_db()
    assert orphaned.status == Report.Status.PENDING and orphaned.error == services.STOPPED
    assert "Its ingestion stopped before it finished" in page.content.decode()

    body = staff_client.get(f"/reports/{orphaned.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "Not being read right now." in body and "Try again" in body
    assert launched == []

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(f"/reports/{orphaned.pk}/reingest/")
    assert launched == [("ingestreport", str(orphaned.pk))]
    orphaned.refresh_from_db()
    assert orphaned.error == "" and orphaned.job.status == Job.Status.STARTING
    assert Report.objects.get(pk=waiting.pk).status == Report.Status.PENDING


def test_a_live_ingester_is_left_alone_by_the_pages(clinician_client, patient, launched):
    report = stored_report(patient, status=Report.Status.PROCESSING, job=runner_job(kind="ingestreport"))
    clinician_client.get(f"/reports/{report.pk}/", HTTP_HX_REQUEST="true")
    clinician_client.get(f"/patients/{patient.pk}/")
    report.refresh_from_db()
    assert report.status == Report.Status.PROCESSING and launched == []
