"""Reports left pending, or processing by a process that is gone, are picked up again at start;
crash leftovers in the data folder are cleaned and an interrupted folder swap is repaired."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from patients import services
from patients.models import Patient, Report
from qeeg_site import startup
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


@pytest.fixture
def live_ingester():
    """A live process that looks like an ingestreport worker."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ingestreport"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_resume_relaunches_pending_and_orphaned_processing_reports(patient, launched, live_ingester):
    pending = stored_report(patient)
    orphaned = stored_report(patient, status=Report.Status.PROCESSING, worker_pid=dead_pid())
    # The pid lives, but it is some other program now (pid reuse after a crash).
    reused = stored_report(patient, status=Report.Status.PROCESSING, worker_pid=os.getpid())
    alive = stored_report(patient, status=Report.Status.PROCESSING, worker_pid=live_ingester)
    ready = stored_report(patient, status=Report.Status.READY)

    assert list(startup.recover()) == ["Resumed ingestion of 3 report(s) left unfinished."]

    assert launched == [("ingestreport", str(pending.pk), str(orphaned.pk), str(reused.pk))]
    orphaned.refresh_from_db()
    assert orphaned.status == Report.Status.PENDING and orphaned.worker_pid is None
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

    services.reports_resume_pending()

    assert sorted(p.name for p in root.iterdir()) == sorted([str(kept.pk), str(swapped.pk), ".orphaned"])
    assert swapped.original_path.exists()
    # A folder without a row is set aside, never deleted: it might belong to another database.
    assert [p.name.split("-")[0] for p in (root / ".orphaned").iterdir()] == ["999"]


def test_only_one_process_claims_a_report(patient):
    report = stored_report(patient)
    assert services.report_claim(report_id=report.pk, pid=101) is True
    assert services.report_claim(report_id=report.pk, pid=102) is False
    report.refresh_from_db()
    assert report.worker_pid == 101
    assert services.report_ingest(report_id=report.pk, pid=102) is None


def test_sigterm_puts_the_report_back_to_pending(patient, monkeypatch, data_dir):
    report = stored_report(patient)

    def interrupted(*args, **kwargs):
        raise services.Interrupted()

    monkeypatch.setattr("patients.ingest.ingest_pdf", interrupted)
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
    assert report.worker_pid is None and report.processed_at is not None
    assert (
        "=== PAGE 1 / 1 ===\n[text layer]\nSynthetic filler page 1" in (report.folder / "text.md").read_text()
    )


def test_a_report_whose_ingester_died_is_resumed_by_the_page_showing_it(
    clinician_client, patient, launched, live_ingester
):
    """Killed (out of memory, kill -9) between restarts: the polling page notices, not only the next start."""
    waiting = stored_report(patient)  # the rest of the dead process's batch
    orphaned = stored_report(patient, status=Report.Status.PROCESSING, worker_pid=dead_pid())
    page = clinician_client.get(f"/patients/{patient.pk}/reports/", HTTP_HX_REQUEST="true")
    assert page.status_code == 200
    assert launched == [("ingestreport", str(waiting.pk), str(orphaned.pk))]
    orphaned.refresh_from_db()
    assert orphaned.status == Report.Status.PENDING and orphaned.worker_pid is None

    # A live ingester is left alone, and nothing is launched while all is well.
    Report.objects.filter(pk=orphaned.pk).update(status=Report.Status.PROCESSING, worker_pid=live_ingester)
    clinician_client.get(f"/reports/{orphaned.pk}/", HTTP_HX_REQUEST="true")
    clinician_client.get(f"/patients/{patient.pk}/")
    assert len(launched) == 1
    orphaned.refresh_from_db()
    assert orphaned.status == Report.Status.PROCESSING


def test_the_report_page_resumes_its_orphaned_report_too(clinician_client, patient, launched):
    orphaned = stored_report(patient, status=Report.Status.PROCESSING, worker_pid=dead_pid())
    clinician_client.get(f"/reports/{orphaned.pk}/")
    assert launched == [("ingestreport", str(orphaned.pk))]
