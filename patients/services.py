"""Writes for patients and reports: one path per behaviour, called by pages, the API and commands alike.

Report files live under data/reports/<id>/ and appear there only whole:
- an upload is checked and written to a work folder first; the row is inserted and the folder renamed to
  its id inside one transaction, so a rejected or crashed upload leaves neither row nor files;
- ingestion builds a complete new folder (original hard-linked, pages, thumbs, text.md, pages.json) beside
  it and swaps it in with two renames; `reports_sweep_files` repairs a swap a crash interrupted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from jobs import selectors as job_selectors
from jobs.launcher import pid_alive
from jobs.models import Job
from jobs.services import dead_rows, job_submit
from ledger import calls as ledger
from ledger.models import ModelCall
from patients.models import ORIGINAL_FILES, Patient, PatientIdentifier, Redaction, Report
from patients.selectors import identifiers_for

if TYPE_CHECKING:
    from patients import ingest, sandbox
# patients.ingest (PDF rendering, OCR) is imported where a report is read or checked, not here: this module is
# imported by every process (the admin's autodiscovery), and a council runner never reads a PDF.

log = logging.getLogger(__name__)

PATIENT_FIELDS = ("label", "notes", "age", "sex", "handedness", "medications", "referral_reason")


class PatientLabelTaken(Exception):
    def __init__(self, label: str) -> None:
        self.message = f"A patient labelled {label!r} already exists (labels are unique, ignoring case)."
        super().__init__(self.message)


class ReportRejected(Exception):
    """An upload we refuse; nothing of it is kept. `status` is the HTTP answer (413, 415 or 422)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- patients -----------------------------------------------------------------------------------------------


def _label_taken(label: str, *, exclude_pk: int | None = None) -> bool:
    return Patient.objects.filter(label__iexact=label).exclude(pk=exclude_pk).exists()


def patient_create(
    *,
    label: str,
    notes: str = "",
    age: int | None = None,
    sex: str = "",
    handedness: str = "",
    medications: str = "",
    referral_reason: str = "",
    user: Any = None,
) -> Patient:
    label = label.strip()
    if _label_taken(label):
        raise PatientLabelTaken(label)
    patient = Patient(
        label=label,
        notes=notes,
        age=age,
        sex=sex or "",
        handedness=handedness or "",
        medications=medications,
        referral_reason=referral_reason,
        created_by=user if user is not None and user.is_authenticated else None,
    )
    patient.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            patient.save()
    except IntegrityError as exc:  # a concurrent create with the same label
        raise PatientLabelTaken(label) from exc
    return patient


def patient_update(*, patient: Patient, **changes: Any) -> Patient:
    """Change any of PATIENT_FIELDS; others are refused so a caller cannot touch ids or audit fields."""
    unknown = set(changes) - set(PATIENT_FIELDS)
    if unknown:
        raise TypeError(f"patient_update() cannot change {', '.join(sorted(unknown))}")
    if "label" in changes:
        changes["label"] = changes["label"].strip()
        if _label_taken(changes["label"], exclude_pk=patient.pk):
            raise PatientLabelTaken(changes["label"])
    for name, value in changes.items():
        # Only the age may be unknown (NULL); every text field stores "nothing entered" as "".
        setattr(patient, name, "" if value is None and name != "age" else value)
    patient.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            patient.save()
    except IntegrityError as exc:
        raise PatientLabelTaken(patient.label) from exc
    return patient


def patient_delete(*, patient: Patient) -> None:
    folders = [report.folder for report in patient.reports.all()]
    patient.delete()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


# --- uploads ------------------------------------------------------------------------------------------------


def _reports_root() -> Path:
    root = settings.DATA_DIR / "reports"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class _Staged:
    folder: Path
    name: str
    kind: str
    size: int
    sha256: str
    page_count: int


def _display_name(name: str) -> str:
    # Browsers may send a path; keep the last part and nothing that could confuse a header or a shell.
    base = Path(name.replace("\\", "/")).name.strip() or "report"
    return "".join(ch for ch in base if ch.isprintable() and ch not in '"/')[:255] or "report"


def _stage(upload: UploadedFile, root: Path) -> _Staged:
    name = _display_name(upload.name or "report")
    if upload.size is not None and upload.size > settings.REPORT_MAX_BYTES:
        raise ReportRejected(
            f"{name} is {upload.size / 1_048_576:.1f} MB; the limit is "
            f"{settings.REPORT_MAX_BYTES / 1_048_576:.1f} MB (REPORT_MAX_BYTES).",
            status=413,
        )
    upload.seek(0)
    head = upload.read(2048)
    from patients import ingest

    try:
        kind = ingest.sniff_kind(head, name)
    except ingest.UnreadableReport as exc:
        raise ReportRejected(exc.message, status=exc.status) from exc
    folder = root / f".upload-{os.getpid()}-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        return _write_staged(upload, folder, name=name, kind=kind)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _write_staged(upload: UploadedFile, folder: Path, *, name: str, kind: str) -> _Staged:
    path = folder / ORIGINAL_FILES[kind][0]
    digest = hashlib.sha256()
    size = 0
    upload.seek(0)
    with open(path, "wb") as out:
        for chunk in upload.chunks():
            size += len(chunk)
            if size > settings.REPORT_MAX_BYTES:
                raise ReportRejected(
                    f"{name} is larger than {settings.REPORT_MAX_BYTES / 1_048_576:.1f} MB (REPORT_MAX_BYTES).",
                    status=413,
                )
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    from patients import ingest

    try:
        page_count = ingest.check_report_file(
            path,
            name=name,
            kind=kind,
            max_pages=settings.REPORT_MAX_PAGES,
            max_stream_bytes=settings.REPORT_MAX_STREAM_MB * 1024 * 1024,
        )
    except ingest.UnreadableReport as exc:
        raise ReportRejected(exc.message, status=exc.status) from exc
    return _Staged(folder, name, kind, size, digest.hexdigest(), page_count)


def report_upload(*, patient: Patient, files: Iterable[UploadedFile], user: Any = None) -> list[Report]:
    """Check and store uploaded reports, then start their ingestion in one child process.

    All or nothing: if any file is refused, ReportRejected names it and none of the files is kept.
    Returns the new reports, all `pending`; the caller answers at once.
    """
    files = list(files)
    if not files:
        raise ReportRejected("Choose at least one report file to upload.", status=422)
    root = _reports_root()
    staged: list[_Staged] = []
    moved: list[Path] = []
    try:
        for upload in files:
            staged.append(_stage(upload, root))
        reports = []
        with transaction.atomic():
            for item in staged:
                report = Report.objects.create(
                    patient=patient,
                    original_name=item.name,
                    kind=item.kind,
                    size_bytes=item.size,
                    sha256=item.sha256,
                    page_count=item.page_count,
                    status=Report.Status.PENDING,
                    uploaded_by=user if user is not None and user.is_authenticated else None,
                )
                # An id reused after a rolled-back insert may have an orphan folder; no row owns it.
                if report.folder.exists():
                    _set_aside(report.folder)
                item.folder.rename(report.folder)
                moved.append(report.folder)
                reports.append(report)
            _submit_ingest([report.pk for report in reports])
    except BaseException:
        # The transaction rolled back: no row survives, so neither may any file.
        for folder in [item.folder for item in staged] + moved:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return reports


INGEST = "ingestreport"


def _submit_ingest(report_ids: list[int]) -> Job:
    """One ingestion job for a batch: the OCR models load once. It is launched when the transaction commits
    and a slot is free; if the launch fails the reports stay pending for the next recovery."""
    job = job_submit(kind=INGEST, args=[str(pk) for pk in report_ids])
    Report.objects.filter(pk__in=report_ids, status=Report.Status.PENDING).update(job=job)
    return job


def report_delete(*, report: Report) -> None:
    folder = report.folder
    report.delete()
    shutil.rmtree(folder, ignore_errors=True)


def report_reingest(*, report: Report) -> bool:
    """Queue a report for ingestion again: a finished one (e.g. after changing OCR settings), or a pending
    one that no live job will read (its runner died). False when it is being read right now."""
    with transaction.atomic():
        updated = Report.objects.filter(
            Q(status__in=Report.FINISHED) | Q(status=Report.Status.PENDING) & job_selectors.dead_q("job"),
            pk=report.pk,
        ).update(status=Report.Status.PENDING, error="", job=None, updated_at=timezone.now())
        if updated:
            _submit_ingest([report.pk])
    return bool(updated)


# --- ingestion (runs in the `ingestreport` process) ---------------------------------------------------------


class Interrupted(BaseException):
    """SIGTERM reached the ingesting process; the report goes back to pending."""


class Lost(Interrupted):
    """This attempt no longer holds its report (`_lost`): it stops as on SIGTERM, and the report stays with
    the attempt that holds it now."""


def report_claim(*, report_id: int, job: Job | None) -> bool:
    """Compare-and-set pending → processing for this job; exactly one process wins."""
    return (
        Report.objects.filter(pk=report_id, status=Report.Status.PENDING).update(
            status=Report.Status.PROCESSING,
            job=job,
            started_at=timezone.now(),
            progress={},
            error="",
            updated_at=timezone.now(),
        )
        == 1
    )


def _ingest_options() -> ingest.IngestOptions:
    from patients import ingest

    return ingest.IngestOptions(
        max_pages=settings.REPORT_MAX_PAGES,
        render_dpi=settings.REPORT_RENDER_DPI,
        ocr_enabled=settings.REPORT_OCR_ENABLED,
        ocr_min_chars=settings.REPORT_OCR_MIN_CHARS,
        ocr_image_area=settings.REPORT_OCR_IMAGE_AREA,
        max_page_pixels=settings.REPORT_MAX_PAGE_PIXELS,
        max_stream_bytes=settings.REPORT_MAX_STREAM_MB * 1024 * 1024,
    )


def _ingest_limits() -> sandbox.Limits:
    from patients import sandbox

    return sandbox.Limits(memory_mb=settings.INGEST_MAX_MEMORY_MB, seconds=settings.INGEST_MAX_SECONDS)


def _swap_in(work: Path, folder: Path) -> None:
    """Replace `folder` by the complete `work` folder. A crash between the renames is repaired at start."""
    old = folder.with_name(f".old-{folder.name}")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    work.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _held(report: Report, job: Job | None):
    """The report, only while it is still being read by this job (a job judged dead has lost it)."""
    return Report.objects.filter(pk=report.pk, status=Report.Status.PROCESSING, job=job)


def _lost(report: Report, job: Job | None) -> bool:
    """This attempt no longer holds the report, which still exists: its runner was judged dead (silent past
    RUN_STALE_SECONDS: stopped, its host cut off) while alive, and the report was settled and claimed by
    another attempt since. A report deleted meanwhile is not lost: `_after_ingest` sees to it."""
    return not _held(report, job).exists() and Report.objects.filter(pk=report.pk).exists()


class _ProgressRecorder:
    """Each ingestion step as it starts, onto the report (one short update; the page polls it): pages done
    of total, what is being done now and since when, and the slowest step so far with its seconds."""

    def __init__(self, report: Report, job: Job | None) -> None:
        self.report, self.job = report, job
        self.now: str = ""
        self.since = 0.0
        self.slowest: dict[str, Any] | None = None

    def __call__(self, step: ingest.Step) -> None:
        clock = time.monotonic()
        if self.now:
            took = round(clock - self.since, 1)
            if self.slowest is None or took > self.slowest["seconds"]:
                self.slowest = {"what": self.now, "seconds": took}
        self.now, self.since = step.what, clock
        progress = {
            "done": step.done,
            "total": step.total,
            "now": step.what,
            "now_at": timezone.now().isoformat(),
            "slowest": self.slowest,
        }
        _held(self.report, self.job).update(progress=progress)


def report_ingest(*, report_id: int, job: Job | None = None) -> Report | None:
    """Claim a pending report for `job` (None: this process, in a test or by hand), build its text and
    images, and mark it ready or failed.

    Returns None when another process holds it (or it is not pending), or when the report was deleted
    meanwhile. Nothing is held open in the database while pages render or OCR runs.
    """
    from patients import ingest, sandbox

    if not report_claim(report_id=report_id, job=job):
        return None
    report = Report.objects.filter(pk=report_id).first()
    if report is None:
        return None
    work = _reports_root() / f".ingest-{report.pk}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        source = report.original_path
        if not source.exists():
            raise ingest.UnreadableReport("The uploaded file is missing from the data folder.")
        work.mkdir()
        # The new folder must hold the original too; a hard link costs nothing.
        try:
            os.link(source, work / source.name)
        except OSError:
            shutil.copy2(source, work / source.name)
        if report.kind == Report.Kind.PDF:
            result = sandbox.ingest_pdf_limited(
                source,
                work,
                name=report.original_name,
                options=_ingest_options(),
                limits=_ingest_limits(),
                on_step=_ProgressRecorder(report, job),
            )
        else:
            result = ingest.ingest_text(source, work, name=report.original_name, kind=report.kind)
        _read_unsure_pages(report, job, source, work, result)
        if _lost(report, job):
            raise Lost()  # the attempt that holds the report now writes its folder, not this one
        _swap_in(work, report.folder)
    except Interrupted:
        shutil.rmtree(work, ignore_errors=True)
        _held(report, job).update(status=Report.Status.PENDING, updated_at=timezone.now())
        raise
    except Exception as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, ingest.UnreadableReport):
            message = exc.message
        else:
            log.exception("ingestion of report %s failed", report.pk)
            message = f"Ingestion failed: {type(exc).__name__}: {exc}"
        _held(report, job).update(
            status=Report.Status.FAILED,
            error=message,
            processed_at=timezone.now(),
            updated_at=timezone.now(),
        )
        return _after_ingest(report)
    _held(report, job).update(
        status=Report.Status.READY,
        page_count=result.page_count,
        error="",
        processed_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if _after_ingest(report) is None:
        return None
    ocr_pages = sum(1 for page in result.pages if page["ocr_ran"])
    log.info(
        "report %s ready: %s page(s), %s OCR'd, %.1f s, peak %s MB",
        report.pk,
        result.page_count,
        ocr_pages,
        result.seconds,
        result.peak_memory_mb,
    )
    return report


UPLOADER_GONE = (
    "the uploader's account no longer exists, so no one's model calls for today "
    "(MODEL_CALLS_PER_USER_PER_DAY) can pay for this reading; the deterministic facts stand alone (staff can "
    "upload the report again to have its pages read)"
)


def _read_unsure_pages(report: Report, job: Job | None, source: Path, work: Path, result: Any) -> None:
    """The vision reader over the pages the deterministic readers were unsure of (patients/readers/vision.py),
    written into the work folder's fact table. It never fails the ingestion: whatever goes wrong, the report
    is ready with the deterministic facts and the table says what happened. Each page sent is a model call
    charged to the uploader (the ledger) as it is made, before it leaves: a pass killed midway leaves every
    call it made counted, and the next attempt (which reads the pages again, new calls) starts from an
    allowance that already holds them. With the day's calls used up, pages are not sent and say why; with a
    daily limit and no uploader any more (their account was deleted), nobody's allowance can pay, so nothing
    is sent either.

    The hold (`Report.vision_calls_held`) is this attempt's: it is set, lowered and ended only while this job
    holds the report (`_held`). An attempt judged dead while alive (stopped, its host cut off: silent past
    RUN_STALE_SECONDS) and taken over by the next (Try again, a server start) would otherwise zero or lower the
    hold of the attempt that now reads the report; instead it stops (Lost) at its next call, unsent."""
    from patients import facts
    from patients.readers import vision

    table = facts.load_table(work)
    if table is None:
        return
    config = vision.VisionConfig.from_settings()
    calls_left, quota_note = None, ""
    if config.model and report.uploaded_by_id is None and settings.MODEL_CALLS_PER_USER_PER_DAY:
        calls_left, quota_note = 0, UPLOADER_GONE
    elif config.model and report.uploaded_by_id is not None:
        # Read the allowance and hold this pass's calls in one transaction, the uploader's row locked (and on
        # SQLite the write lock taken at the start): of two uploads read at once, the second sees the calls
        # the first holds.
        with transaction.atomic():
            list(
                get_user_model()
                .objects.select_for_update()
                .filter(pk=report.uploaded_by_id)
                .values_list("pk")
            )
            # A hold left by a killed attempt ends; none is set by an attempt that lost the report.
            if not _held(report, job).update(vision_calls_held=0):
                raise Lost()
            allowed = ledger.allowance(report.uploaded_by_id)
            calls_left = allowed.left
            if calls_left is not None:
                held = min(len(vision.unsure_pages(table)), config.max_pages, calls_left)
                _held(report, job).update(vision_calls_held=held)
        quota_note = (
            f"the uploader's model calls for today are used up (MODEL_CALLS_PER_USER_PER_DAY = {allowed.limit}: "
            f"{allowed.used_today} made today, {allowed.reserved} held for their work in flight, "
            f"{calls_left} left when this reading began); the deterministic facts stand alone"
        )

    def charge(page: int) -> None:
        # The call and the end of its hold in one transaction: the allowance never counts it twice or not at all.
        # An attempt that lost the report sends nothing more (and touches no other attempt's hold).
        with transaction.atomic():
            if not _held(report, job).update(vision_calls_held=Greatest(F("vision_calls_held") - 1, 0)):
                raise Lost()
            ledger.call_made(
                user_id=report.uploaded_by_id,
                kind=ModelCall.Kind.VISION,
                model_id=config.model,
                report_id=report.pk,
            )

    try:
        vision.read_unsure_pages(
            table,
            pdf_path=source,
            layouts=result.layouts,
            records=result.pages,
            identifiers=identifiers_for(report.patient, report),
            date_order=settings.DEID_DATE_ORDER,
            config=config,
            calls_left=calls_left,
            quota_note=quota_note,
            on_call=charge,
        )
    except Exception as exc:
        # The report's id only: an error text could carry what was read from the page.
        log.exception("vision reader failed on report %s", report.pk)
        table["vision"] = {
            "model": config.model,
            "status": "failed",
            "note": f"the vision reader failed ({type(exc).__name__}); the deterministic facts stand alone",
            "pages": vision.unsure_pages(table),
        }
    finally:
        _held(report, job).update(vision_calls_held=0)  # what was not sent is not held
    facts.write_table(work, table)


def _after_ingest(report: Report) -> Report | None:
    """The report as now stored; None if it was deleted while it was read (its new folder goes too, and
    the rest of the batch carries on)."""
    try:
        report.refresh_from_db()
    except Report.DoesNotExist:
        shutil.rmtree(report.folder, ignore_errors=True)
        log.info("report %s was deleted while it was read", report.pk)
        return None
    return report


def install_sigterm_handler() -> None:
    def on_sigterm(signum: int, frame: Any) -> None:
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_sigterm)


# --- recovery: what a dead ingester left (jobs/ calls these, see PatientsConfig.ready) --------------------

STOPPED = (
    "Its ingestion stopped before it finished (the process died, or its host went away). It is read again "
    "with the next upload or server start, or when you press Try again."
)


def reports_settle() -> int:
    """Reports "processing" by a job that is no longer alive go back to pending, saying so. Writes only
    (compare-and-set on the job we judged), never launches: pages and the API call it before they show
    reports, so a report is never shown processing by a runner that is gone."""
    settled = 0
    for report, _ in dead_rows(Report.objects.filter(status=Report.Status.PROCESSING)):
        settled += Report.objects.filter(
            pk=report.pk, status=Report.Status.PROCESSING, job_id=report.job_id
        ).update(status=Report.Status.PENDING, error=STOPPED, updated_at=timezone.now())
    return settled


def reports_settled(reports: Iterable[Report]) -> bool:
    """Before showing reports: if any is "processing", settle those whose ingester died. True when something
    changed, so the caller reads them again."""
    return any(report.status == Report.Status.PROCESSING for report in reports) and reports_settle() > 0


def reports_resume_pending() -> int:
    """Pending reports that no live job will read get one new ingestion job (its claims skip what another
    process holds). Only where launching is allowed: server start, uploads, a finishing runner."""
    waiting = list(
        Report.objects.filter(status=Report.Status.PENDING)
        .filter(job_selectors.dead_q("job"))
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    if waiting:
        with transaction.atomic():
            _submit_ingest(waiting)
    return len(waiting)


def reports_sweep_files() -> int:
    """Remove leftovers of crashed uploads/ingestions and finish interrupted folder swaps."""
    root = settings.DATA_DIR / "reports"
    if not root.exists():
        return 0
    removed = 0
    for entry in root.iterdir():
        name = entry.name
        if name.startswith(".old-"):
            target = root / name.removeprefix(".old-")
            if target.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:  # crashed between the two renames of a swap: the old folder is still whole
                entry.rename(target)
            removed += 1
        elif name.startswith((".upload-", ".ingest-")):
            pid_part = name.split("-")[2] if name.startswith(".ingest-") else name.split("-")[1]
            if not pid_alive(int(pid_part) if pid_part.isdigit() else None):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    known = {str(pk) for pk in Report.objects.values_list("pk", flat=True)}
    for entry in root.iterdir():
        # A folder renamed into place whose transaction never committed: no row owns it. Set aside, not
        # deleted: it may as well belong to another database pointed at this data folder by mistake.
        if entry.is_dir() and entry.name.isdigit() and entry.name not in known:
            _set_aside(entry)
            removed += 1
    return removed


def _set_aside(folder: Path) -> Path:
    """Move a report folder no row owns to data/reports/.orphaned/ (logged), out of every id's way."""
    target = (
        folder.parent / ".orphaned" / f"{folder.name}-{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    )
    target.parent.mkdir(exist_ok=True)
    folder.rename(target)
    log.warning("report folder %s has no database row; moved to %s", folder, target)
    return target


# --- identifiers and redactions (what de-identification removes; never sent, never logged) -------------------


class IdentifierRejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _validated(row: PatientIdentifier | Redaction) -> None:
    try:
        row.full_clean(exclude=["patient", "report", "created_by"])
    except ValidationError as exc:
        raise IdentifierRejected(" ".join(m for ms in exc.message_dict.values() for m in ms)) from exc


def identifier_add(*, patient: Patient, kind: str, value: str, user: Any = None) -> PatientIdentifier:
    row = PatientIdentifier(patient=patient, kind=kind, value=value, created_by=_user(user))
    _validated(row)
    if patient.identifiers.filter(kind=row.kind, value__iexact=row.value).exists():
        raise IdentifierRejected("This identifier is already recorded.")
    row.save()
    return row


def identifier_delete(*, identifier: PatientIdentifier) -> None:
    identifier.delete()


def redaction_add(
    *, patient: Patient, phrase: str, report: Report | None = None, user: Any = None
) -> Redaction:
    """A phrase always removed from what the council sees: for `report`, or (None) every report of `patient`."""
    if report is not None and report.patient_id != patient.pk:
        raise IdentifierRejected("That report belongs to another patient.")
    phrase = " ".join(phrase.split())
    if sum(ch.isalnum() for ch in phrase) < 3:
        raise IdentifierRejected("A redaction needs at least three letters or digits.")
    row = Redaction(patient=patient, report=report, phrase=phrase, created_by=_user(user))
    _validated(row)
    row.save()
    return row


def redaction_delete(*, redaction: Redaction) -> None:
    redaction.delete()


def _user(user: Any) -> Any:
    return user if user is not None and getattr(user, "is_authenticated", False) else None


# --- the fact table: corrections and the lock ------------------------------------------------------------------


class FactsRefused(Exception):
    """A correction or lock the table cannot take (no table, locked, no such fact, a value it cannot be)."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


MAX_CORRECTION_CHARS = 100
MAX_NOTE_CHARS = 500


def _now_iso() -> str:
    return timezone.now().isoformat(timespec="seconds")


def _who(user: Any) -> str:
    return user.get_username() if _user(user) is not None else "unknown"


def _change_table(report: Report, change) -> Any:
    """Read facts.json, apply `change(table)`, write it back whole (documents.files), with the report row
    locked so two corrections at once are applied one after the other and neither is lost (PostgreSQL:
    SELECT … FOR UPDATE; SQLite: the IMMEDIATE transaction holds the write lock)."""
    from patients import facts

    with transaction.atomic():
        locked = Report.objects.select_for_update().filter(pk=report.pk).first()
        if locked is None or locked.status != Report.Status.READY:
            raise FactsRefused(f"Report {report.pk} is not ready; its facts cannot change now.", status=409)
        table = facts.load_table(locked.folder)
        if table is None:
            raise FactsRefused(
                f"Report {report.pk} has no fact table yet; read it again to make one.", status=404
            )
        result = change(table)
        facts.write_table(locked.folder, table)
    return result


def _corrected_value(fact: dict[str, Any], text: str) -> tuple[str, float | None, bool]:
    """The clinician's value as a fact holds it: (value, number, placeholder). A measurement that was read
    as a number (or a placeholder) takes only a number or a placeholder; the fact's own unit may be typed."""
    from patients.readers.base import parse_value, split_unit

    value = " ".join(text.split())
    if not value:
        raise FactsRefused("Enter the value as printed on the page (e.g. 352, -1.2, N/A).")
    if len(value) > MAX_CORRECTION_CHARS:
        raise FactsRefused(
            f"A value is at most {MAX_CORRECTION_CHARS} characters; this one has {len(value)}."
        )
    bare, unit = split_unit(value)
    if unit and fact.get("unit") and unit.lower() != str(fact["unit"]).lower():
        raise FactsRefused(f"This fact is in {fact['unit']}, not {unit}; enter the value in {fact['unit']}.")
    parsed, number, placeholder = parse_value(bare if unit else value)
    numeric = fact.get("number") is not None or fact.get("placeholder")
    if numeric and number is None and not placeholder:
        raise FactsRefused(
            f"“{value}” is not a number: enter a number (e.g. 352 or -1.2) or a placeholder (-, N/A, <0)."
        )
    return parsed, number, placeholder


def fact_correct(*, report: Report, fact_id: str, value: str, note: str = "", user: Any = None) -> dict:
    """Correct one measurement's value. The reading stays in `value`; the correction (value, number, who,
    when, note) goes beside it, on the fact and on every other reading of the same measurement it disagrees
    with (a correction settles a disagreement). A value equal to the reading (of a fact no other reader
    disputes) removes the correction.
    Refused while the table is locked. Returns the corrected fact."""
    note = note.strip()
    if len(note) > MAX_NOTE_CHARS:
        raise FactsRefused(f"A note is at most {MAX_NOTE_CHARS} characters; this one has {len(note)}.")

    def change(table: dict[str, Any]) -> dict[str, Any]:
        if lock := table.get("lock"):
            raise FactsRefused(
                f"The fact table was locked by {lock['by']} at {lock['at']}; unlock it to correct a value.",
                status=409,
            )
        by_id = {fact["id"]: fact for fact in table["facts"]}
        fact = by_id.get(fact_id)
        if fact is None:
            raise FactsRefused(f"This report's fact table has no fact with id “{fact_id[:200]}”.")
        parsed, number, placeholder = _corrected_value(fact, value)
        same = [fact, *(by_id[other] for other in fact.get("disagrees_with", []) if other in by_id)]
        if parsed == fact["value"] and len(same) == 1:
            fact["correction"] = None  # put back as read
        else:
            correction = {
                "value": parsed,
                "number": number,
                "placeholder": placeholder,
                "by": _who(user),
                "at": _now_iso(),
                "note": note,
            }
            for row in same:
                row["correction"] = dict(correction)
        return fact

    return _change_table(report, change)


def facts_lock(*, report: Report, locked: bool = True, user: Any = None) -> dict[str, str]:
    """Lock the table (who, when), or with `locked=False` lift the lock; returns the lock set or lifted.
    A locked table refuses corrections until it is unlocked. Locking a locked table, or unlocking one
    that is not, is refused (409), so the first lock's who and when are never overwritten."""

    def change(table: dict[str, Any]) -> dict[str, str]:
        lock = table.get("lock")
        if locked and lock:
            raise FactsRefused(
                f"The fact table is already locked by {lock['by']} at {lock['at']}.", status=409
            )
        if not locked and not lock:
            raise FactsRefused("The fact table is not locked.", status=409)
        table["lock"] = {"by": _who(user), "at": _now_iso()} if locked else None
        return table["lock"] or lock

    return _change_table(report, change)
