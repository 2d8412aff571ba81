"""What the council is given for a report: its text and the clinical context, de-identified, and page images
only with their identifying regions painted out (or none, as DEID_PAGE_IMAGES says).

The one place both the pipeline (`runs.pipeline`) and the "What the council will see" page get it from, so the
page shows exactly what is sent. The identifiers come from the patient (staff record them), the patient
label, and the clinicians' redactions; they never leave this machine (council/deid.py explains the rules).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import date

from django.conf import settings

from council import deid
from council.stages.base import CouncilInput
from patients import boxes
from patients.models import Patient, PatientIdentifier, Redaction, Report
from patients.selectors import report_pages, report_text
from runs.models import Run


@dataclass(frozen=True)
class PageImage:
    page: int
    sent: bool
    painted: int = 0  # regions painted out
    reason: str = ""  # why it was not sent


@dataclass(frozen=True)
class CouncilSource:
    council_input: CouncilInput
    report: deid.Deidentified
    context: dict[str, str]  # the clinical context as the council sees it
    images: list[PageImage] = field(default_factory=list)


def identifiers_for(patient: Patient, report: Report | None = None) -> deid.Identifiers:
    """Everything known to identify this patient, for this report: recorded identifiers, the patient
    label, and the redactions for the patient and for this report."""
    rows = list(patient.identifiers.all())
    kinds = PatientIdentifier.Kind
    redactions = Redaction.objects.filter(patient=patient, report__isnull=True)
    if report is not None:
        redactions = redactions | Redaction.objects.filter(patient=patient, report=report)
    return deid.Identifiers(
        names=tuple(r.value for r in rows if r.kind == kinds.NAME),
        birth_dates=tuple(d for r in rows if (d := r.birth_date) is not None),
        record_numbers=(patient.label, *(r.value for r in rows if r.kind == kinds.RECORD_NUMBER)),
        phrases=(
            *(r.value for r in rows if r.kind == kinds.OTHER),
            *redactions.values_list("phrase", flat=True),
        ),
    )


def guard_for(patient: Patient, report: Report | None = None) -> deid.IdentifierGuard:
    return deid.IdentifierGuard(identifiers_for(patient, report), order=settings.DEID_DATE_ORDER)


def guard_for_run(run_id: int) -> deid.IdentifierGuard:
    run = Run.objects.select_related("patient", "report").get(pk=run_id)
    return guard_for(run.patient, run.report)


def deidentified_context(
    patient: Patient, identifiers: deid.Identifiers, *, anchor: date | None
) -> dict[str, str]:
    """The clinical context with the same rules and the report's `day 0`, so its dates line up."""
    return {
        key: deid.deidentify(value, identifiers, anchor=anchor, order=settings.DEID_DATE_ORDER).text
        for key, value in patient.clinical_context().items()
    }


def council_source(*, patient: Patient, report: Report, with_images: bool = True) -> CouncilSource:
    """The de-identified report text, context and (when configured) painted-out page images."""
    identifiers = identifiers_for(patient, report)
    text = deid.deidentify(report_text(report), identifiers, order=settings.DEID_DATE_ORDER)
    context = deidentified_context(patient, identifiers, anchor=text.anchor)
    images = page_images(report, identifiers) if with_images else []
    return CouncilSource(
        council_input=CouncilInput(
            report_text=text.text,
            clinical_context=context,
            page_images=tuple(url for url, _ in images if url),
        ),
        report=text,
        context=context,
        images=[decision for _, decision in images],
    )


def page_images(report: Report, identifiers: deid.Identifiers) -> list[tuple[str, PageImage]]:
    """(data URL or "", what happened) for the first COUNCIL_PAGE_IMAGES pages, when DEID_PAGE_IMAGES is
    "paint". A page goes only if every text on it could be located (text layer, and OCR of any bitmap on
    it) and the identifying regions were painted out."""
    limit = settings.COUNCIL_PAGE_IMAGES
    if settings.DEID_PAGE_IMAGES != "paint" or limit <= 0:
        return []
    out: list[tuple[str, PageImage]] = []
    for page in [p for p in report_pages(report) if p["image"] is not None][:limit]:
        number = page["page"]
        try:
            lines = boxes.page_lines(report, number, page["image"])
        except boxes.CannotLocate as exc:
            out.append(("", PageImage(page=number, sent=False, reason=exc.message)))
            continue
        found = deid.identifying_boxes(lines, identifiers, order=settings.DEID_DATE_ORDER)
        png = deid.paint_out(page["image"].read_bytes(), found)
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        out.append((url, PageImage(page=number, sent=True, painted=len(found))))
    return out
