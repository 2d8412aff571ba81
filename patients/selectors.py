"""Reads for patients and reports. The council reads report text and page images only through here."""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, Lower
from django.utils import timezone

from council import deid, timeline
from jobs import selectors as job_selectors
from patients import search_index
from patients.models import Patient, PatientIdentifier, Redaction, Report, fold
from qeeg_site.json_rows import compiled

if TYPE_CHECKING:
    from patients import facts


class PageData(TypedDict):
    page: int
    sources: dict[str, str]  # "text layer" / "OCR" / "text file" -> text
    chars: dict[str, int]
    ocr_ran: bool
    ocr_reason: str
    ocr_confidence: float | None
    image: Path | None  # full-size PNG
    thumb: Path | None
    render_note: str  # why the page image is coarser than REPORT_RENDER_DPI (a page too large), or ""


def patient_search(
    q: str = "",
    *,
    within: QuerySet[Patient] | None = None,
    assigned: QuerySet | None = None,
    values: Sequence[str] = (),
) -> QuerySet[Patient]:
    """Patients by label (of `within`, e.g. those a user may see), each with `report_count`; `q` matches
    label (ignoring case and accents), notes or reason for referral. A search may carry `narrowed`: the same
    rows, read through the search index (qeeg_site.pagination counts with it).

    `assigned` instead of `within`: the patients of a user who reaches only those given them, as their
    (patient, clinician) rows (patients.access.assigned). The list then walks the label index, each row's pair
    looked up, and stops at its page; `narrowed` reads what the search index finds, each row's pair looked
    up, or without an index the user's patients, sorted: quicker when they are few. An unsearched list is
    counted from the rows alone (one index, no patient read).

    `values`: the rows as `.values(*values)` dicts, `narrowed` too (no report count read unless named)."""
    if assigned is None:
        return _as_values(_searched(q, Patient.objects.all() if within is None else within), values)
    walked = _searched(q, Patient.objects.filter(Exists(assigned.filter(patient_id=OuterRef("pk")))))
    if getattr(walked, "narrowed", None) is None:
        walked.narrowed = _searched(q, Patient.objects.filter(pk__in=assigned.values("patient_id")))
    if not q.strip():
        walked.counted = assigned
    return _as_values(walked, values)


def _as_values(found: QuerySet[Patient], values: Sequence[str]) -> QuerySet:
    if not values:
        return found
    rows = found.values(*values)
    for name in ("narrowed", "counted"):
        if (other := getattr(found, name, None)) is not None:
            setattr(rows, name, other.values(*values) if name == "narrowed" else other)
    return rows


@functools.cache
def _report_count(vendor: str) -> Any:
    # The count as a correlated subquery, not Count("reports"): its GROUP BY made every page scan and sort
    # the whole table, where this walks the label index and counts only the rows on the page. Compiled
    # once: building it was a tenth of a list's CPU.
    reports = Report.objects.filter(patient=OuterRef("pk")).order_by().values("patient")
    return compiled(Patient, n=Coalesce(Subquery(reports.annotate(n=Count("pk")).values("n")), 0))["n"]


def _searched(q: str, patients: QuerySet[Patient]) -> QuerySet[Patient]:
    patients = patients.annotate(report_count=_report_count(connection.vendor)).order_by(Lower("label"), "pk")
    if q := q.strip():
        # The label ignoring case and accents ("odegard" finds "Ødegård"); notes and referral ignoring case.
        folded = fold(q)
        patients = patients.filter(
            Q(label_folded__contains=folded) | Q(notes__icontains=q) | Q(referral_reason__icontains=q)
        )
        if (found := search_index.candidates(q, folded)) is not None:
            # The same rows, the same order, looked for only among those the trigram index finds: counted
            # this way always (the count no longer reads every patient); read this way when they are few
            # (the pagination's choice: a common word's first page is quicker read in label order).
            patients.narrowed = patients.filter(pk__in=found)
    return patients


def identifiers_for(patient: Patient, *reports: Report | None) -> deid.Identifiers:
    """Everything known to identify this patient, for these reports: recorded identifiers, the patient
    label, and the redactions for the patient and for each of the reports."""
    rows = list(patient.identifiers.all())
    kinds = PatientIdentifier.Kind
    redactions = Redaction.objects.filter(patient=patient, report__isnull=True)
    if chosen := [report for report in reports if report is not None]:
        redactions = redactions | Redaction.objects.filter(patient=patient, report__in=chosen)
    return deid.Identifiers(
        names=tuple(r.value for r in rows if r.kind == kinds.NAME),
        birth_dates=tuple(d for r in rows if (d := r.birth_date) is not None),
        record_numbers=tuple(r.value for r in rows if r.kind == kinds.RECORD_NUMBER),
        phrases=(
            *(r.value for r in rows if r.kind == kinds.OTHER),
            *redactions.values_list("phrase", flat=True),
        ),
        labels=(patient.label,),
    )


def report_duplicate_of(report: Report) -> Report | None:
    """The first report of the same patient uploaded before this one with the same content (sha256)."""
    return (
        Report.objects.filter(patient_id=report.patient_id, sha256=report.sha256, pk__lt=report.pk)
        .order_by("pk")
        .first()
    )


def report_text(report: Report) -> str:
    """The stored page-marked text (`=== PAGE i / N ===`, then `[text layer]`, `[OCR]`… per page).
    Empty until the report is ready."""
    if report.status != Report.Status.READY:
        return ""
    path = report.folder / "text.md"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def report_pages(report: Report) -> list[PageData]:
    """Per page: each source's text, what OCR did, and the image files. Empty until ready."""
    if report.status != Report.Status.READY:
        return []
    path = report.folder / "pages.json"
    if not path.exists():
        return []
    meta = json.loads(path.read_text(encoding="utf-8"))
    pages = []
    for record in meta["pages"]:
        pages.append(
            PageData(
                page=record["page"],
                sources=record["sources"],
                chars=record["chars"],
                ocr_ran=record["ocr_ran"],
                ocr_reason=record["ocr_reason"],
                ocr_confidence=record["ocr_confidence"],
                image=report.folder / record["image"] if record["image"] else None,
                thumb=report.folder / record["thumb"] if record["thumb"] else None,
                render_note=record.get("render_note", ""),  # absent from reports read before the cap
            )
        )
    return pages


def report_facts(report: Report) -> facts.FactTable | None:
    """The report's fact table (`facts.json`, see patients/facts.py); None until the report is ready or
    when it was ingested before fact tables existed (reading it again makes one)."""
    if report.status != Report.Status.READY:
        return None
    from patients import facts  # light: the page readers (numpy, pypdfium2) load only where pages are read

    return facts.load_table(report.folder)


def report_page_images(report: Report) -> list[Path]:
    """Full-size page PNGs in page order (none for text uploads or unfinished reports)."""
    return [page["image"] for page in report_pages(report) if page["image"] is not None]


def report_page_image(report: Report, number: int, *, thumb: bool = False) -> Path | None:
    """One page's PNG (1-based), or None when there is no such page image."""
    if report.status != Report.Status.READY or number < 1:
        return None
    name = f"{'thumbs' if thumb else 'pages'}/page-{number:04d}.png"
    path = report.folder / name
    return path if path.is_file() else None


def reports_unfinished(reports: list[Report]) -> bool:
    return any(not report.is_finished for report in reports)


def ingest_progress(report: Report) -> dict[str, Any] | None:
    """While a report waits or is read: why it waits (no free job slot…) and for how long; or pages done of
    total, the step under way ("OCR of page 4") with its seconds so far, and the slowest step yet."""
    now = timezone.now()
    if report.status == Report.Status.PENDING and not report.error:
        return {
            "waiting": True,
            "reason": job_selectors.wait_reason(report.job),
            "seconds": round((now - report.created_at).total_seconds(), 1),
        }
    if report.status != Report.Status.PROCESSING:
        return None
    progress = dict(report.progress or {})
    since = progress.get("now_at")
    seconds = (now - datetime.fromisoformat(since)).total_seconds() if since else 0.0
    return {
        "waiting": False,
        "done": progress.get("done", 0),
        "total": progress.get("total") or report.page_count or 0,
        "now": progress.get("now", ""),
        "seconds": round(max(0.0, seconds), 1),
        "slowest": progress.get("slowest"),
    }


# -- several reports as one history ------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """Reports of one patient on one timeline (council/timeline.py): the reports in timeline order (by their
    first session, then upload), the timeline, and the merged, session-mapped fact table (absolute dates:
    it never leaves this machine as it is; runs.sources de-identifies what the council sees)."""

    reports: list[Report]
    timeline: timeline.Timeline
    facts: list[dict[str, Any]]
    tables: dict[int, facts.FactTable | None]  # report id → its own table

    @property
    def anchor(self) -> date | None:
        return self.timeline.anchor

    def page_of(self, run_page: int) -> tuple[Report, int] | None:
        """The report and its page behind a page number of the history (pages are numbered on)."""
        at = 0
        for report in self.reports:
            count = report.page_count or 0
            if run_page <= at + count:
                return (report, run_page - at) if run_page > at else None
            at += count
        return None

    def first_page(self, report: Report) -> int:
        """The history's page number of the report's page 1."""
        at = 0
        for other in self.reports:
            if other.pk == report.pk:
                return at + 1
            at += other.page_count or 0
        raise ValueError(f"Report {report.pk} is not in this history.")


def _report_facts(report: Report, table: facts.FactTable | None) -> timeline.ReportFacts:
    return timeline.ReportFacts(
        report_id=report.pk,
        facts=list((table or {}).get("facts") or []),
        order=settings.DEID_DATE_ORDER,
        pages=report.page_count or 0,
    )


def reports_history(reports: Sequence[Report], *, ordered: bool = False) -> History:
    """`reports` (ready, of one patient) on one timeline, ordered by the first session each one prints
    (`ordered`: kept in the order given, as a run stored it, so its page numbers never move)."""
    tables = {report.pk: report_facts(report) for report in reports}
    if ordered:
        inputs = [_report_facts(r, tables[r.pk]) for r in reports]
        line = timeline.build(inputs)
        return History(list(reports), line, timeline.merge_facts(line, inputs), tables)
    given = sorted(reports, key=lambda r: r.pk)
    first = timeline.build(_report_facts(r, tables[r.pk]) for r in given)

    def first_session(report: Report) -> int:
        indexes = [s.index for s in first.sessions if any(r == report.pk for r, _ in s.members)]
        return min(indexes, default=len(first.sessions) + 1)

    ordered = sorted(given, key=lambda r: (first_session(r), r.pk))
    inputs = [_report_facts(r, tables[r.pk]) for r in ordered]
    line = timeline.build(inputs)
    return History(reports=ordered, timeline=line, facts=timeline.merge_facts(line, inputs), tables=tables)


def patient_history(patient: Patient) -> History:
    """Every ready report of the patient on one timeline; a file uploaded twice counts once (the first).
    Built once per state of those reports and kept (`HISTORIES`): the patient page and each of its trend
    charts, a request of its own, ask for the same timeline. Treat it as read-only."""
    return _patient_kept(patient)[0]


def patient_series(patient: Patient) -> tuple[History, list[timeline.Series]]:
    """The patient's history and each measurement's numbers across its sessions (`timeline.series`), both
    kept with the history: every trend chart of the patient page needs them."""
    history, kept = _patient_kept(patient)
    if kept.series is None:
        kept.series = timeline.series(history.facts)  # the same list whichever thread gets here first
    return history, kept.series


def _patient_kept(patient: Patient) -> tuple[History, _Kept]:
    seen: set[str] = set()
    reports = []
    for report in patient.reports.filter(status=Report.Status.READY).order_by("pk"):
        if report.sha256 not in seen:
            seen.add(report.sha256)
            reports.append(report)
    key = _history_key(patient, reports)  # stamped before anything is read: a change after it is a new key
    kept = HISTORIES.get(key)
    if kept is None:
        kept = HISTORIES.put(key, _Kept(reports_history(reports)))
    built = kept.history
    mine = {report.pk: report for report in reports}  # this request's rows, in the kept timeline's order
    return History([mine[r.pk] for r in built.reports], built.timeline, built.facts, built.tables), kept


def _history_key(patient: Patient, reports: Sequence[Report]) -> tuple:
    """What a patient's history is made of, found without reading it: each ready report's row and its fact
    table file's inode, modification time and size (a correction or a lock rewrites the file whole, under a
    new inode), and the date order the timeline reads dates in."""
    from patients.facts import FACTS_FILE

    stamps = []
    for report in reports:
        try:
            stat = (report.folder / FACTS_FILE).stat()
            stamp: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        stamps.append(
            (report.pk, str(report.folder), report.sha256, report.page_count, report.processed_at, stamp)
        )
    return (patient.pk, settings.DEID_DATE_ORDER, tuple(stamps))


@dataclass
class _Kept:
    history: History
    series: list[timeline.Series] | None = None  # patient_series, once asked for


class _Histories:
    """The last few patients' histories in this process, by `_history_key` (one per patient, the latest): at
    most `size`, the least recently asked for dropped first. Threads of one web process share it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[tuple, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> _Kept | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
            return kept

    def put(self, key: tuple, kept: _Kept) -> _Kept:
        with self._lock:
            for older in [k for k in self._kept if k[0] == key[0]]:
                del self._kept[older]  # the same patient's history before a change: never asked for again
            self._kept[key] = kept
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return kept

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


HISTORIES = _Histories(size=32)


class Highlight(TypedDict):
    page: int
    width: float  # the page in PDF points (the unit of fact boxes): an SVG viewBox over its image
    height: float
    box: tuple[float, float, float, float] | None  # x, y, width, height of the value, with a margin
    zoom: tuple[float, float, float, float] | None  # a viewBox around the box, wide enough to read its row


HIGHLIGHT_MARGIN = 2.0  # points around a value's box
ZOOM_WIDTH, ZOOM_HEIGHT = 260.0, 110.0  # points of page shown around the value (its row and neighbours)


def fact_highlight(report: Report, table: facts.FactTable, fact: dict) -> Highlight | None:
    """Where `fact` sits on its page image, for drawing it highlighted: None when the page has no image.
    `box` is None when the reader recorded no position for the value."""
    number = fact.get("page")
    if not isinstance(number, int) or report_page_image(report, number) is None:
        return None
    quality = next((p for p in table.get("pages") or [] if p.get("page") == number), {})
    width, height = quality.get("width"), quality.get("height")
    if not width or not height:  # a table made before pages carried their size: from the render
        from PIL import Image  # a runner never draws a page

        with Image.open(report_page_image(report, number)) as image:
            px_width, px_height = image.size
        width, height = (
            px_width * 72 / settings.REPORT_RENDER_DPI,
            px_height * 72 / settings.REPORT_RENDER_DPI,
        )
    box = zoom = None
    coordinates = fact.get("box") or []
    if len(coordinates) == 4 and coordinates[2] > coordinates[0] and coordinates[3] > coordinates[1]:
        x0, y0, x1, y1 = (float(value) for value in coordinates)
        m = HIGHLIGHT_MARGIN
        box = (x0 - m, y0 - m, x1 - x0 + 2 * m, y1 - y0 + 2 * m)
        zoom_width, zoom_height = min(ZOOM_WIDTH, width), min(ZOOM_HEIGHT, height)
        left = min(max(0.0, (x0 + x1) / 2 - zoom_width / 2), width - zoom_width)
        top = min(max(0.0, (y0 + y1) / 2 - zoom_height / 2), height - zoom_height)
        zoom = (left, top, zoom_width, zoom_height)
    return Highlight(page=number, width=round(width, 2), height=round(height, 2), box=box, zoom=zoom)


def vision_calls_held(user: Any) -> int:
    """The model calls held for `user`'s reports whose vision pass is under way (registered with the
    ledger in patients/apps.py, as the runs' calls to come are)."""
    return (
        Report.objects.filter(uploaded_by=user, status=Report.Status.PROCESSING).aggregate(
            held=Sum("vision_calls_held")
        )["held"]
        or 0
    )
