"""API endpoints for patients and their reports. Thin: services write, selectors read."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import FileResponse, HttpRequest, HttpResponse
from django.urls import reverse
from ninja import File, ModelSchema, Router, Schema, Status, UploadedFile
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import Field

import audit
from patients import access, selectors, services
from patients.models import Patient, Report
from qeeg_site.pagination import answered_as_built

router = Router(tags=["patients"])

Sex = Literal["", "female", "male", "other"]
Handedness = Literal["", "right", "left", "ambidextrous"]


class PatientOut(ModelSchema):
    class Meta:
        model = Patient
        fields = [
            "id",
            "label",
            "notes",
            "age",
            "sex",
            "handedness",
            "medications",
            "referral_reason",
            "created_at",
            "updated_at",
        ]


class PatientIn(Schema):
    label: str = Field(min_length=1, max_length=100)
    notes: str = ""
    age: int | None = Field(default=None, ge=0, le=130)
    sex: Sex = ""
    handedness: Handedness = ""
    medications: str = ""
    referral_reason: str = ""


class PatientUpdate(Schema):
    """Fields left out keep their value."""

    label: str | None = Field(default=None, min_length=1, max_length=100)
    notes: str | None = None
    age: int | None = Field(default=None, ge=0, le=130)
    sex: Sex | None = None
    handedness: Handedness | None = None
    medications: str | None = None
    referral_reason: str | None = None


class ReportOut(Schema):
    id: int
    patient_id: int
    original_name: str
    kind: str
    size_bytes: int
    sha256: str
    page_count: int | None
    status: str
    error: str
    created_at: datetime
    updated_at: datetime
    processed_at: datetime | None
    text_url: str
    original_url: str
    page_image_urls: list[str]
    duplicate_of: int | None  # the first earlier report of this patient with the same content (sha256)

    @staticmethod
    def resolve_duplicate_of(report: Report) -> int | None:
        earlier = selectors.report_duplicate_of(report)
        return earlier.pk if earlier else None

    @staticmethod
    def resolve_text_url(report: Report) -> str:
        return reverse("api:report_text", args=[report.pk])

    @staticmethod
    def resolve_original_url(report: Report) -> str:
        return reverse("api:report_original", args=[report.pk])

    @staticmethod
    def resolve_page_image_urls(report: Report) -> list[str]:
        if report.status != Report.Status.READY or report.kind != Report.Kind.PDF:
            return []
        return [
            reverse("api:report_page", args=[report.pk, n]) for n in range(1, (report.page_count or 0) + 1)
        ]


class PageOut(Schema):
    page: int
    sources: dict[str, str]
    chars: dict[str, int]
    ocr_ran: bool
    ocr_reason: str
    ocr_confidence: float | None
    image_url: str | None


class ReportTextOut(Schema):
    report_id: int
    page_count: int
    text: str
    pages: list[PageOut]


class ErrorOut(Schema):
    detail: str


def _ready(report: Report) -> Report:
    if report.status == Report.Status.FAILED:
        raise HttpError(409, f"Report {report.pk} failed: {report.error}")
    if report.status != Report.Status.READY:
        raise HttpError(409, f"Report {report.pk} is {report.status}; try again when it is ready.")
    return report


# A listed patient's columns, read as they are written: the schema's fields, in its order.
LISTED_FIELDS = tuple(PatientOut.model_fields)


@router.get("/patients", response=list[PatientOut])
@answered_as_built
@paginate(page_size=50)  # NINJA_PAGINATION_CLASS: a page past the last is a 422
def patient_list(request: HttpRequest, q: str = ""):
    """Patients by label; `q` searches label, notes and reason for referral."""
    if (assigned := access.assigned(request.user)) is not None:
        return selectors.patient_search(q, assigned=assigned, values=LISTED_FIELDS)
    return selectors.patient_search(q, values=LISTED_FIELDS)


@router.post("/patients", response={201: PatientOut, 409: ErrorOut})
def patient_create(request: HttpRequest, payload: PatientIn):
    access.require_action(request.user, "create")
    try:
        patient = services.patient_create(**payload.dict(), user=request.user)
    except services.PatientLabelTaken as exc:
        raise HttpError(409, exc.message) from exc
    audit.record(request, "patient.created", patient)
    return Status(201, patient)


@router.get("/patients/{int:patient_id}", response={200: PatientOut, 404: ErrorOut})
def patient_detail(request: HttpRequest, patient_id: int):
    patient = access.patient_for(request.user, patient_id)
    audit.record(request, "patient.viewed", patient)
    return patient


@router.put("/patients/{int:patient_id}", response={200: PatientOut, 404: ErrorOut, 409: ErrorOut})
def patient_update(request: HttpRequest, patient_id: int, payload: PatientUpdate):
    patient = access.patient_for(request.user, patient_id, "edit")
    changes = payload.dict(exclude_unset=True)
    if changes.get("label", "") is None:
        raise HttpError(422, "label: may not be null")
    try:
        patient = services.patient_update(patient=patient, **changes)
    except services.PatientLabelTaken as exc:
        raise HttpError(409, exc.message) from exc
    audit.record(request, "patient.edited", patient, fields=sorted(changes))
    return patient


@router.post(
    "/patients/{int:patient_id}/reports",
    response={201: list[ReportOut], 404: ErrorOut, 413: ErrorOut, 415: ErrorOut, 422: ErrorOut},
)
def report_upload(request: HttpRequest, patient_id: int, files: File[list[UploadedFile]]):
    """Upload one or more reports (multipart field `files`: PDF, .txt or .md). Answers at once with the
    reports `pending`; poll `GET /api/reports/{id}` until `ready` or `failed`. If any file is refused,
    none is kept."""
    patient = access.patient_for(request.user, patient_id, "upload")
    try:
        reports = services.report_upload(patient=patient, files=files, user=request.user)
    except services.ReportRejected as exc:
        raise HttpError(exc.status, exc.message) from exc
    for report in reports:
        audit.record(request, "report.uploaded", report)
    return Status(201, reports)


@router.get("/patients/{int:patient_id}/reports", response=list[ReportOut])
@paginate(page_size=50)  # NINJA_PAGINATION_CLASS: a page past the last is a 422
def report_list(request: HttpRequest, patient_id: int):
    patient = access.patient_for(request.user, patient_id)
    services.reports_settled(patient.reports.filter(status=Report.Status.PROCESSING))
    return patient.reports.order_by("-created_at", "-pk")


@router.get("/reports/{int:report_id}", response={200: ReportOut, 404: ErrorOut})
def report_detail(request: HttpRequest, report_id: int):
    report = access.report_for(request.user, report_id)
    # A client polls this until ready; an ingester that died meanwhile must not leave it "processing".
    if services.reports_settled([report]):
        report.refresh_from_db()
    return report


@router.post("/reports/{int:report_id}/reingest", response={202: ReportOut, 404: ErrorOut, 409: ErrorOut})
def report_reingest(request: HttpRequest, report_id: int):
    """Read the report again: a ready or failed one, or a pending one whose ingestion stopped."""
    report = access.report_for(request.user, report_id, "reingest")
    services.reports_settled([report])
    if not services.report_reingest(report=report):
        raise HttpError(409, f"Report {report.pk} is being read right now; wait for it to finish.")
    audit.record(request, "report.reingested", report)
    report.refresh_from_db()
    return Status(202, report)


@router.get(
    "/reports/{int:report_id}/text",
    response={200: ReportTextOut, 404: ErrorOut, 409: ErrorOut},
    url_name="report_text",
)
def report_text(request: HttpRequest, report_id: int, format: Literal["text", "json"] = "text"):
    """The page-marked text (`=== PAGE i / N ===`, sources labelled `[text layer]`, `[OCR]`) as text/plain;
    `?format=json` gives it per page with what each source yielded."""
    report = _ready(access.report_for(request.user, report_id))
    audit.record(request, "report.viewed", report, part="text")
    text = selectors.report_text(report)
    if format == "text":
        return HttpResponse(text, content_type="text/plain; charset=utf-8")
    pages = [
        {
            **{
                key: page[key]
                for key in ("page", "sources", "chars", "ocr_ran", "ocr_reason", "ocr_confidence")
            },
            "image_url": reverse("api:report_page", args=[report.pk, page["page"]])
            if page["image"]
            else None,
        }
        for page in selectors.report_pages(report)
    ]
    return {"report_id": report.pk, "page_count": len(pages), "text": text, "pages": pages}


@router.get(
    "/reports/{int:report_id}/facts",
    response={200: dict, 404: ErrorOut, 409: ErrorOut},
    url_name="report_facts",
)
def report_facts(request: HttpRequest, report_id: int):
    """The fact table read from the report's pages: one row per measurement with its page, site, session,
    value as printed, parsed number, unit, target range or Z norm, reader, confidence and box; per page how
    well it was read; expected facts that are missing; disagreements between readers. Schema in
    docs/design.md ("Fact table")."""
    report = _ready(access.report_for(request.user, report_id))
    table = selectors.report_facts(report)
    if table is None:
        raise HttpError(404, f"Report {report.pk} has no fact table yet; read it again to make one.")
    audit.record(request, "report.viewed", report, part="facts")
    return table


class FactCorrectionIn(Schema):
    fact: str = Field(min_length=1, max_length=500, description="the fact's `id` in the table")
    value: str = Field(
        max_length=services.MAX_CORRECTION_CHARS,
        description="the value as printed on the page; the reading itself, for an undisputed fact, "
        "removes the correction",
    )
    note: str = Field(default="", max_length=services.MAX_NOTE_CHARS)


class FactLockOut(Schema):
    locked: bool
    by: str
    at: str


def _facts_refused(exc: services.FactsRefused) -> HttpError:
    return HttpError(exc.status, exc.message)


@router.post(
    "/reports/{int:report_id}/facts/corrections",
    response={200: dict, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    url_name="report_fact_correct",
)
def report_fact_correct(request: HttpRequest, report_id: int, payload: FactCorrectionIn):
    """Correct one fact's value (`{"fact": id, "value": "352", "note": "…"}`). The reading stays in
    `value`; the correction (value, number, by, at, note) is put beside it, and on every reading of the same
    measurement another reader disagrees with. Refused with 409 while the table is locked. Answers the
    corrected fact."""
    report = _ready(access.report_for(request.user, report_id, "correct_facts"))
    try:
        fact = services.fact_correct(
            report=report, fact_id=payload.fact, value=payload.value, note=payload.note, user=request.user
        )
    except services.FactsRefused as exc:
        raise _facts_refused(exc) from exc
    audit.record(request, "fact.corrected", report, page=fact["page"], removed=fact["correction"] is None)
    return fact


@router.post(
    "/reports/{int:report_id}/facts/lock",
    response={200: FactLockOut, 404: ErrorOut, 409: ErrorOut},
    url_name="report_facts_lock",
)
def report_facts_lock(request: HttpRequest, report_id: int):
    """Lock the fact table (who, when). A locked table refuses corrections until it is unlocked; a run
    started on an unlocked table says so on its page, in its API detail and in its export."""
    return _facts_lock(request, report_id, locked=True)


@router.delete(
    "/reports/{int:report_id}/facts/lock",
    response={200: FactLockOut, 404: ErrorOut, 409: ErrorOut},
    url_name="report_facts_unlock",
)
def report_facts_unlock(request: HttpRequest, report_id: int):
    """Unlock the fact table so values can be corrected again; answers the lock that was lifted."""
    return _facts_lock(request, report_id, locked=False)


def _facts_lock(request: HttpRequest, report_id: int, *, locked: bool) -> dict[str, Any]:
    report = _ready(access.report_for(request.user, report_id, "lock_facts"))
    try:
        lock = services.facts_lock(report=report, locked=locked, user=request.user)
    except services.FactsRefused as exc:
        raise _facts_refused(exc) from exc
    audit.record(request, "facts.locked" if locked else "facts.unlocked", report)
    return {"locked": locked, **lock}


@router.get(
    "/reports/{int:report_id}/pages/{int:number}.png",
    response={404: ErrorOut, 409: ErrorOut},
    url_name="report_page",
)
def report_page(request: HttpRequest, report_id: int, number: int, thumb: bool = False):
    """One page rendered as PNG (1-based); `?thumb=true` for a small one."""
    report = _ready(access.report_for(request.user, report_id))
    path = selectors.report_page_image(report, number, thumb=thumb)
    if path is None:
        raise HttpError(404, f"Report {report.pk} has no page image {number}.")
    if not thumb:  # a thumbnail is part of a report's list, which is recorded where it is shown
        audit.record(request, "report.viewed", report, part="page", page=number)
    return FileResponse(open(path, "rb"), content_type="image/png")


@router.get("/reports/{int:report_id}/original", response={404: ErrorOut}, url_name="report_original")
def report_original(request: HttpRequest, report_id: int):
    """The uploaded file, byte for byte."""
    report = access.report_for(request.user, report_id)
    path = report.original_path
    if not path.exists():
        raise HttpError(404, f"The original file of report {report.pk} is missing.")
    audit.record(request, "report.downloaded", report)
    return FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=report.original_name,
        content_type=report.original_content_type,
    )
