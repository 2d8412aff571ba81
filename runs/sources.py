"""What the council is given for a report: its text and the clinical context, de-identified, and page images
only with their identifying regions painted out (or none, as DEID_PAGE_IMAGES says).

The one place both the pipeline (`runs.pipeline`) and the "What the council will see" page get it from, so the
page shows exactly what is sent. The identifiers come from the patient (staff record them), the patient
label, and the clinicians' redactions; they never leave this machine (council/deid.py explains the rules).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import date

from django.conf import settings

from council import deid
from council.stages.base import CouncilInput
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
    original: str  # the report text as stored (never sent)
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
    original = report_text(report)
    text = deid.deidentify(original, identifiers, order=settings.DEID_DATE_ORDER)
    context = deidentified_context(patient, identifiers, anchor=text.anchor)
    images = page_images(report, identifiers) if with_images else []
    return CouncilSource(
        council_input=CouncilInput(
            report_text=text.text,
            clinical_context=context,
            page_images=tuple(url for url, _ in images if url),
        ),
        original=original,
        report=text,
        context=context,
        images=[decision for _, decision in images],
    )


def page_images(report: Report, identifiers: deid.Identifiers) -> list[tuple[str, PageImage]]:
    """(data URL or "", what happened) for each page of `pages_to_send`. A page goes only if every text on
    it could be located (text layer, and OCR of any bitmap on it) and the identifying regions were painted
    out."""
    out: list[tuple[str, PageImage]] = []
    for number in pages_to_send(report):
        png, decision = painted_page(report, number, identifiers)
        out.append(("data:image/png;base64," + base64.b64encode(png).decode() if png else "", decision))
    return out


def pages_to_send(report: Report) -> list[int]:
    """The page numbers whose images would go with Stage 1 (none unless DEID_PAGE_IMAGES is "paint"): the
    pages that needed OCR, whose text may be garbled, up to COUNCIL_PAGE_IMAGES. A text-layer page is read
    exactly, so its image adds nothing but risk."""
    limit = settings.COUNCIL_PAGE_IMAGES
    if settings.DEID_PAGE_IMAGES != "paint" or limit <= 0:
        return []
    needed_ocr = [
        p["page"]
        for p in report_pages(report)
        if p["image"] is not None and (p["ocr_ran"] or p["ocr_reason"].endswith("OCR is off"))
    ]
    return needed_ocr[:limit]


def painted_page(
    report: Report, number: int, identifiers: deid.Identifiers
) -> tuple[bytes | None, PageImage]:
    """Page `number`'s image with its identifying regions painted out, or None and the reason it cannot go."""
    from patients import boxes  # PDF and OCR libraries: loaded only when a page image is painted

    image = next((p["image"] for p in report_pages(report) if p["page"] == number), None)
    if image is None:
        return None, PageImage(page=number, sent=False, reason="the page has no image")
    try:
        lines = boxes.page_lines(report, number, image)
    except boxes.CannotLocate as exc:
        return None, PageImage(page=number, sent=False, reason=exc.message)
    found = deid.identifying_boxes(lines, identifiers, order=settings.DEID_DATE_ORDER)
    return deid.paint_out(image.read_bytes(), found), PageImage(page=number, sent=True, painted=len(found))


# --- the preview: what the council will see, page by page beside the original -----------------------------

_PAGE_MARK = re.compile(r"^=== PAGE \d+ / \d+ ===$", re.MULTILINE)


@dataclass(frozen=True)
class PreviewPage:
    title: str
    original: str
    sent: list[tuple[str, bool]]  # (text, is a replacement), in order


def preview_pages(original: str, result: deid.Deidentified) -> list[PreviewPage]:
    """Both texts cut at the page marks (de-identification leaves them as they are), the sent side in
    pieces so a page can show each replacement."""
    cuts_original = [m.start() for m in _PAGE_MARK.finditer(original)] or [0]
    cuts_sent = [m.start() for m in _PAGE_MARK.finditer(result.text)] or [0]
    if len(cuts_original) != len(cuts_sent):  # never expected; then one block rather than a wrong pairing
        cuts_original, cuts_sent = [0], [0]
    pages = []
    bounds = list(zip(cuts_sent, [*cuts_sent[1:], len(result.text)], strict=True))
    ends_original = [*cuts_original[1:], len(original)]
    for (start, end), o_start, o_end in zip(bounds, cuts_original, ends_original, strict=True):
        pieces: list[tuple[str, bool]] = []
        at = start
        for mark_start, mark_end in result.marks:
            if mark_end <= start or mark_start >= end:
                continue
            pieces.append((result.text[at:mark_start], False))
            pieces.append((result.text[mark_start:mark_end], True))
            at = mark_end
        pieces.append((result.text[at:end], False))
        page_text = original[o_start:o_end]
        first_line = page_text.split("\n", 1)[0]
        title = first_line.strip("= ").title() if _PAGE_MARK.match(first_line) else "Report text"
        pages.append(PreviewPage(title=title, original=page_text.rstrip(), sent=[p for p in pieces if p[0]]))
    return pages
