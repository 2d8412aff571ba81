"""What the council is given for a report: its text, its fact table and the clinical context, de-identified,
and page images only with their identifying regions painted out (or none, as DEID_PAGE_IMAGES says).

The one place both the pipeline (`runs.pipeline`) and the "What the council will see" page get it from, so the
page shows exactly what is sent. The identifiers come from the patient (staff record them), the patient
label, and the clinicians' redactions; they never leave this machine (council/deid.py explains the rules).
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.conf import settings

from council import deid
from council.stages.base import NO_FACT_TABLE, CouncilInput
from patients.models import Patient, Report
from patients.selectors import History, identifiers_for, report_pages, report_text, reports_history
from runs import selectors
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
    original: str  # the report text as stored (never sent); several reports: joined as sent
    report: deid.Deidentified
    context: dict[str, str]  # the clinical context as the council sees it
    facts: PromptFacts
    images: list[PageImage] = field(default_factory=list)
    history: History | None = None  # the reports on one timeline, their merged fact table


def guard_for(patient: Patient, *reports: Report | None) -> deid.IdentifierGuard:
    return deid.IdentifierGuard(identifiers_for(patient, *reports), order=settings.DEID_DATE_ORDER)


def guard_for_run(run_id: int) -> deid.IdentifierGuard:
    run = Run.objects.select_related("patient", "report").get(pk=run_id)
    return guard_for(run.patient, *run.report_list())


def deidentified_context(
    patient: Patient, identifiers: deid.Identifiers, *, anchor: date | None
) -> dict[str, str]:
    """The clinical context with the same rules and the report's `day 0`, so its dates line up."""
    return {
        key: deid.deidentify(value, identifiers, anchor=anchor, order=settings.DEID_DATE_ORDER).text
        for key, value in patient.clinical_context().items()
    }


def run_source(run: Run, *, with_images: bool = True) -> CouncilSource:
    """What every stage of `run` is given: its report, or its reports on one timeline, with the fact table
    the run recorded (`prompt_facts`)."""
    return council_source(patient=run.patient, reports=run.report_list(), with_images=with_images, run=run)


def day_zero(
    reports: Sequence[Report], identifiers: deid.Identifiers, history: History | None = None
) -> date | None:
    """The date `day 0` stands for in everything sent about `reports` (texts, fact table, context): the
    first session of their timeline (a session date they print), else the earliest date in their texts."""
    history = history or reports_history(reports)
    if history.anchor is not None:
        return history.anchor
    order = settings.DEID_DATE_ORDER
    firsts = [deid.first_date(report_text(r), identifiers, order=order) for r in reports]
    return min((d for d in firsts if d is not None), default=None)


def council_source(
    *,
    patient: Patient,
    report: Report | None = None,
    reports: Sequence[Report] = (),
    with_images: bool = True,
    ordered: bool = False,
    run: Run | None = None,
) -> CouncilSource:
    """The de-identified report text, fact table (`prompt_facts`: of `run`, else as a run started now
    would get it) and context, and (when configured) painted-out page images.

    Several reports (`reports`) go on one timeline (patients.selectors.reports_history; a run's, or with
    `ordered` the reports as given, in that order, so a run's page numbers never move): their texts in
    timeline order under a table of the timeline's sessions, each text's page marks numbered on across the
    reports (so `[p5]` names one page of one report), the fact table merged and session-mapped, and every
    absolute date, in every text, the table and the context, `day N` from the first session of the whole
    timeline (`day_zero`)."""
    chosen = list({r.pk: r for r in [*([report] if report else []), *reports]}.values())
    identifiers = identifiers_for(patient, *chosen)
    history = reports_history(chosen, ordered=ordered or run is not None)
    anchor = day_zero(chosen, identifiers, history)
    facts = prompt_facts(
        run if run is not None else Run(patient=patient, report=history.reports[0]), reports=history.reports
    )
    if len(chosen) == 1:
        original = report_text(chosen[0])
        text = deid.deidentify(original, identifiers, anchor=anchor, order=settings.DEID_DATE_ORDER)
        images = page_images(chosen[0], identifiers) if with_images else []
    else:
        original, text, images = _joined(history, identifiers, anchor, with_images=with_images)
    context = deidentified_context(patient, identifiers, anchor=anchor)
    return CouncilSource(
        council_input=CouncilInput(
            report_text=text.text,
            clinical_context=context,
            page_images=tuple(url for url, _ in images if url),
            fact_table=facts.text,
        ),
        original=original,
        report=text,
        context=context,
        facts=facts,
        images=[decision for _, decision in images],
        history=history,
    )


def _joined(
    history: History, identifiers: deid.Identifiers, anchor: date | None, *, with_images: bool
) -> tuple[str, deid.Deidentified, list[tuple[str, PageImage]]]:
    """Several reports as one text (original, de-identified) and their page images, pages numbered on."""
    total = sum(r.page_count or 0 for r in history.reports)
    head = timeline_block(history)
    parts_original, parts_sent = [head], [head]
    marks: list[tuple[int, int]] = []
    replaced: Counter[str] = Counter()
    at = len(head)
    images: list[tuple[str, PageImage]] = []
    for position, source in enumerate(history.reports, start=1):
        original = report_text(source)
        first = history.first_page(source)
        header = _report_header(history, source, position, first)
        text = deid.deidentify(original, identifiers, anchor=anchor, order=settings.DEID_DATE_ORDER)
        sent = renumber_pages(text.text, first - 1, total)
        parts_original.append(header + renumber_pages(original, first - 1, total))
        at += len(header)
        marks.extend(_shifted_marks(text, sent, at))
        parts_sent.append(header + sent)
        at += len(sent)
        replaced.update(text.replaced)
        if with_images:
            images.extend(
                (url, PageImage(first - 1 + d.page, d.sent, d.painted, d.reason))
                for url, d in page_images(source, identifiers)
            )
    sent_text = "".join(parts_sent)
    result = deid.Deidentified(text=sent_text, anchor=anchor, replaced=replaced, marks=tuple(marks))
    return "".join(parts_original), result, images[: settings.COUNCIL_PAGE_IMAGES]


_PAGE_NUMBER = re.compile(r"^=== PAGE (\d+) / \d+ ===$", re.MULTILINE)


def renumber_pages(text: str, before: int, total: int) -> str:
    """A report's page marks as pages of several reports: `=== PAGE 2 / 3 ===` → `=== PAGE 6 / 9 ===`."""
    return _PAGE_NUMBER.sub(lambda m: f"=== PAGE {before + int(m.group(1))} / {total} ===", text)


def _shifted_marks(text: deid.Deidentified, renumbered: str, offset: int) -> list[tuple[int, int]]:
    """The replacement marks of `text` in its renumbered form, placed at `offset` of the joined text
    (renumbering changes lengths only inside page marks, which hold no replacement)."""
    cuts = [(m.start(), len(m.group(0))) for m in _PAGE_NUMBER.finditer(text.text)]
    new = [len(m.group(0)) for m in _PAGE_NUMBER.finditer(renumbered)]
    out = []
    for start, end in text.marks:
        delta = sum(n - old for (at, old), n in zip(cuts, new, strict=True) if at < start)
        out.append((offset + start + delta, offset + end + delta))
    return out


def timeline_block(history: History) -> str:
    """The timeline as the council reads it, before the reports: each session, its day, and which report's
    session it is (the same session printed by two reports is one line)."""
    names = {r.pk: f"report {i}" for i, r in enumerate(history.reports, start=1)}
    line = history.timeline
    lines = [
        f"=== TIMELINE: {len(history.reports)} reports of this patient, {len(line.sessions)} sessions ===",
        "Each report numbers its sessions from 1; below they are on one timeline (by the dates printed), and "
        "the fact table and these instructions call them by their timeline number. Dates are days after "
        "timeline session 1. Pages are numbered on across the reports.",
    ]
    for session in line.sessions:
        members = " = ".join(f"{names[r]} session {n}" for r, n in session.members)
        lines.append(f"- {line.label(session.index)}: {members}")
    return "\n".join(lines) + "\n\n"


def _report_header(history: History, report: Report, position: int, first: int) -> str:
    count = report.page_count or 0
    own = sorted({n for s in history.timeline.sessions for r, n in s.members if r == report.pk})
    mapped = ", ".join(
        f"its session {n} is timeline session {history.timeline.index_of(report.pk, n)}" for n in own
    )
    pages = f"pages {first}\u2013{first + count - 1}" if count > 1 else f"page {first}"
    return (
        f"=== REPORT {position} of {len(history.reports)}: {pages} of this run"
        + (f"; {mapped}" if mapped else "")
        + " ===\n"
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


# --- the fact table every prompt of a run carries --------------------------------------------------------

# Readings below this confidence are marked unsure in the prompt (a reader's certainty of site and session
# times the recogniser's score; text-layer facts are 1.0).
UNSURE_BELOW = 0.6


@dataclass(frozen=True)
class PromptFacts:
    text: str  # the table as the prompts carry it, de-identified like the report
    lock: dict[str, str] | None  # the lock of the table the run was given: {by, at}, None when unlocked
    facts: int  # rows in that table
    corrected: int  # of them, corrected by a clinician or staff member
    has_table: bool  # False: the report has no fact table (read before tables existed)


def prompt_facts(run: Run, reports: Sequence[Report] | None = None) -> PromptFacts:
    """The fact table every prompt of `run` carries as its authoritative numbers, in the shared start:
    the run's table (its report's, or its reports' merged: sessions by timeline number, pages numbered on;
    `runs.selectors.reports_fact_table`) as it was when the run first started (its record,
    `runs.selectors.facts_given`; as it is now for a run not started yet), grouped by page, each value with
    its page as [pN], its source ([text layer] / [OCR]), corrections and disagreements said; then
    de-identified with the reports' identifiers, date order and `day 0` (`day_zero`), so a session date
    reads as the same `day N` as in the report text and nothing identifying leaves (the client's guard
    checks again). `reports`: the run's, in its order (default: `run.report_list()`)."""
    reports = list(reports) if reports else run.report_list()
    if run.pk is not None and run.facts_given:
        table = None if run.facts_given.get("none") else selectors.facts_given(run)
        if table is not None and len(reports) > 1 and "reports" not in table:
            # Recorded before a run over several reports recorded their merged table (its first report's
            # alone): the merged one as it is now.
            table = selectors.reports_fact_table(reports)
    else:
        table = selectors.reports_fact_table(reports)
    if table is None:
        return PromptFacts(text=NO_FACT_TABLE, lock=None, facts=0, corrected=0, has_table=False)
    identifiers = identifiers_for(run.patient, *reports)
    order = deid.date_order("\n".join(report_text(r) for r in reports), settings.DEID_DATE_ORDER)
    anchor = day_zero(reports, identifiers)
    markdown = fact_table_markdown(table)
    text = deid.deidentify(markdown, identifiers, anchor=anchor, order=order).text
    rows = table.get("facts") or []
    return PromptFacts(
        text=text,
        lock=table.get("lock") or None,
        facts=len(rows),
        corrected=sum(1 for fact in rows if fact.get("correction")),
        has_table=True,
    )


def fact_table_markdown(table: dict[str, Any]) -> str:
    """The fact table as markdown for a prompt: a line on its lock, then per page (`### [pN]`, where it was
    read from, how well) one table per column layout: sessions as columns where a measurement has several,
    else bands (a site-by-band Z table), else one value column. A cell is the value as printed (N/A stays
    N/A), a correction with what was read, both readings where readers disagree."""
    rows: list[dict[str, Any]] = table.get("facts") or []
    corrected = sum(1 for fact in rows if fact.get("correction"))
    if table.get("lock"):
        lines = ["Locked: yes. A clinician checked this table against the report's pages and locked it."]
    else:
        lines = [
            "Locked: no. No clinician has locked this table yet: its values are as the page readers read "
            "them" + (f", {corrected} of them corrected by a clinician." if corrected else ".")
        ]
    lines.append(
        f"{len(rows)} values. Cite each by its page: [pN]. A cell is the value as printed; N/A, - and <0 are "
        "placeholders, not values."
    )
    quality = {page["page"]: page for page in table.get("pages") or []}
    by_page: dict[int, list[dict[str, Any]]] = {}
    for fact in rows:
        by_page.setdefault(fact["page"], []).append(fact)
    for number in sorted(set(by_page) | set(quality)):
        page_rows = by_page.get(number, [])
        page = quality.get(number)
        if not page_rows:
            if page is not None and page.get("reader") is None:
                lines += ["", f"### [p{number}]", _NO_READER]
            continue
        sources = sorted({f"[{fact.get('source') or 'text layer'}]" for fact in page_rows})
        heading = f"### [p{number}] read from {' and '.join(sources)}"
        if page is not None and not page.get("fully_read", True):
            heading += " (" + _not_fully_read(page) + ")"
        lines += ["", heading]
        for columns, measurements in _page_tables(page_rows):
            lines += ["", *_markdown_table(columns, measurements)]
    missing = table.get("missing") or []
    if missing:
        shown = "; ".join(_missing_line(m) for m in missing[:40])
        more = f"; and {len(missing) - 40} more" if len(missing) > 40 else ""
        lines += ["", f"Expected on the pages but not found ({len(missing)}): {shown}{more}."]
    return "\n".join(lines)


_NO_READER = (
    "No reader knows this page's layout: its numbers are only in the report text below; check [OCR] text "
    "there with care and say a number is not in the table."
)


def _not_fully_read(page: dict[str, Any]) -> str:
    parts = []
    if page.get("missing"):
        parts.append(f"{page['missing']} expected value{'s' if page['missing'] != 1 else ''} not found")
    if page.get("merged_tokens"):
        parts.append(f"{page['merged_tokens']} cell{'s' if page['merged_tokens'] != 1 else ''} still merged")
    if page.get("mean_confidence") is not None and not parts:
        parts.append(f"mean confidence {page['mean_confidence']:.2f}")
    return "not fully read: " + ", ".join(parts or ["unsure"])


def _missing_line(missing: dict[str, Any]) -> str:
    parts = [f"[p{missing['page']}] {missing['metric']}"]
    parts += [str(missing[key]) for key in ("site", "band") if missing.get(key)]
    if missing.get("session"):
        parts.append(f"session {missing['session']}")
    return " ".join(parts)


@dataclass
class _Measurement:
    name: str
    site: str
    band: str
    unit: str
    reference: str  # vendor target range or Z norm
    cells: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # column -> readings


def _page_tables(rows: list[dict[str, Any]]) -> list[tuple[list[str], list[_Measurement]]]:
    """The page's measurements, each as one table row, in tables of the same columns (first seen first).
    A measurement read in several sessions has a column per session; one read once per band (a site-by-band
    Z table), a column per band; anything else one value column."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for fact in rows:
        # Not by unit: a placeholder ("-", N/A) carries none, and belongs in its measurement's row.
        key = tuple(str(fact.get(name) or "") for name in ("metric", "section", "target", "norm"))
        groups.setdefault(key, []).append(fact)
    tables: dict[tuple[str, ...], list[_Measurement]] = {}
    for (metric, section, target, norm), facts in groups.items():
        unit = next((str(fact["unit"]) for fact in facts if fact.get("unit")), "")
        sessions = list(dict.fromkeys(fact.get("session") for fact in facts))
        by_band = len(sessions) == 1 and len({fact.get("band") for fact in facts}) > 1
        name = metric if not section or section.lower() in metric.lower() else f"{metric} ({section})"
        if by_band and sessions[0] is not None:
            name = f"{name}, session {sessions[0]}"
        measurements: dict[tuple, _Measurement] = {}
        for fact in facts:
            site, band = fact.get("site") or "", "" if by_band else fact.get("band") or ""
            row = measurements.get((site, band))
            if row is None:
                row = measurements[(site, band)] = _Measurement(name, site, band, unit, target or norm)
            row.cells.setdefault(_column(fact, by_band=by_band), []).append(fact)
        ordered = sorted(facts, key=lambda fact: (fact.get("session") is not None, fact.get("session") or 0))
        columns = tuple(dict.fromkeys(_column(fact, by_band=by_band) for fact in ordered))
        tables.setdefault(columns, []).extend(measurements.values())
    return [(list(columns), measurements) for columns, measurements in tables.items()]


def _column(fact: dict[str, Any], *, by_band: bool) -> str:
    if by_band:
        return str(fact.get("band") or "Value")
    return f"Session {fact['session']}" if fact.get("session") is not None else "Value"


def _markdown_table(columns: list[str], measurements: list[_Measurement]) -> list[str]:
    with_site = any(m.site for m in measurements)
    with_band = any(m.band for m in measurements)
    with_unit = any(m.unit for m in measurements)
    with_reference = any(m.reference for m in measurements)
    header = ["Measurement", *(["Site"] if with_site else []), *(["Band"] if with_band else []), *columns]
    header += [*(["Unit"] if with_unit else []), *(["Vendor target / Z norm"] if with_reference else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in measurements:
        cells = [m.name, *([m.site] if with_site else []), *([m.band] if with_band else [])]
        cells += [_cell(m.cells.get(column, [])) for column in columns]
        cells += [*([m.unit] if with_unit else []), *([m.reference] if with_reference else [])]
        lines.append("| " + " | ".join(_md(cell) for cell in cells) + " |")
    return lines


def _cell(readings: list[dict[str, Any]]) -> str:
    """One measurement in one column: a correction wins (what was read said), readers that disagree both
    shown, a reading the reader was unsure of marked."""
    if not readings:
        return ""
    read = list(dict.fromkeys(str(fact["value"]) for fact in readings))
    corrected = next((fact["correction"] for fact in readings if fact.get("correction")), None)
    if corrected:
        value = str(corrected["value"])
        return value if read == [value] else f"{value} (corrected; read as {' / '.join(read)})"
    if len(read) > 1:
        sources = [f"{fact['value']} [{fact.get('source')}]" for fact in readings]
        return " / ".join(dict.fromkeys(sources)) + " (readers disagree)"
    confidences = [fact["confidence"] for fact in readings if fact.get("confidence") is not None]
    if confidences and min(confidences) < UNSURE_BELOW:
        return f"{read[0]} (unsure reading)"
    return read[0]


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- the preview: what the council will see, page by page beside the original -----------------------------

# Where the preview cuts the text: each page, and in a run over several reports the timeline and each
# report's header (the marks council_source writes; de-identification leaves them alone).
_SECTION_MARK = re.compile(r"^=== (?:PAGE \d+ / \d+|REPORT \d+ of \d+: .*|TIMELINE: .*) ===$", re.MULTILINE)
_KINDS = {"PAGE": "page", "REPORT": "report", "TIMELINE": "timeline"}


@dataclass(frozen=True)
class PreviewPage:
    title: str
    original: str
    sent: list[tuple[str, bool]]  # (text, is a replacement), in order
    kind: str = "text"  # page, report (a report's header alone), timeline, text (before any mark)


def preview_pages(original: str, result: deid.Deidentified) -> list[PreviewPage]:
    """Both texts cut at the section marks (de-identification leaves them as they are), the sent side in
    pieces so a page can show each replacement."""
    cuts_original = _cuts(original)
    cuts_sent = _cuts(result.text)
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
        page_text = original[o_start:o_end].strip("\n")
        first_line, _, body = page_text.partition("\n")
        title, kind = "Report text", "text"
        if _SECTION_MARK.match(first_line):
            head, colon, rest = first_line.strip("= ").partition(":")
            title, kind = head.capitalize() + colon + rest, _KINDS[head.split()[0]]
            if kind == "report" and body.strip():
                kind = "text"  # a report with no page marks (a text upload): its text is under its header
        pages.append(
            PreviewPage(title=title, original=page_text.rstrip(), sent=[p for p in pieces if p[0]], kind=kind)
        )
    return pages


def _cuts(text: str) -> list[int]:
    cuts = [m.start() for m in _SECTION_MARK.finditer(text)]
    if not cuts or text[: cuts[0]].strip():
        cuts.insert(0, 0)  # text before the first mark is a section too
    return cuts


def write_up_source(*, patient: Patient, reports: Sequence[Report], text: str) -> tuple[str, dict[str, str]]:
    """A text written about these reports (a run's signed write-up, for the patient version) and the
    clinical context, de-identified by the same rules, identifiers and `day 0` as the reports themselves
    were for the council (`day_zero`: a date the write-up prints is the same `day N` as in the prompts)."""
    identifiers = identifiers_for(patient, *reports)
    anchor = day_zero(reports, identifiers)
    sent = deid.deidentify(text, identifiers, anchor=anchor, order=settings.DEID_DATE_ORDER)
    return sent.text, deidentified_context(patient, identifiers, anchor=anchor)
