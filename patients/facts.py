"""The fact table: every measurement read from a report, each tied to its page, stored as JSON on disk.

Built during ingestion from the page readers' readings (`patients.readers`), written beside `text.md` as
`facts.json` (never in the database), read by the API and the report page. The schema is in
docs/design.md ("Fact table"); later work (corrections, the clinician's lock, number checking) writes the
fields reserved for it here: a correction keeps the original reading, a lock says who and when.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from documents.files import write_atomic

if TYPE_CHECKING:  # the readers import numpy and pypdfium2: 0.2-0.4 s a runner that only reads the JSON skips
    from patients.layout import PageLayout
    from patients.readers import Reading
    from patients.readers.base import Fact

FACTS_FILE = "facts.json"
SCHEMA_VERSION = 1
# A page is "fully read" when its reader found every fact its layout must have, left no merged token, and
# recognised its boxes at least this surely on average.
FULLY_READ_CONFIDENCE = 0.85


class PageQuality(TypedDict):
    page: int
    width: float | None  # the page's size in PDF points, the unit of every fact's box (None: no layout)
    height: float | None
    sources: list[str]  # the layouts read: "text layer", "OCR"
    reader: str | None  # None: no reader knows this page's layout
    labels_found: int
    labels_expected: int
    cells_read: int
    merged_tokens: int
    mean_confidence: float | None
    facts: int
    expected: int
    missing: int
    fully_read: bool
    unsure: list[str]  # why the page is not fully read, one reason each ([] when it is)
    vision: dict[str, Any] | None  # what the vision reader did with the page (patients/readers/vision.py)
    notes: list[str]


class MissingFact(TypedDict):
    page: int
    metric: str
    site: str | None
    band: str | None
    session: int | None


class FactTable(TypedDict):
    schema: int
    generated_at: str
    pages: list[PageQuality]
    facts: list[dict[str, Any]]  # Fact plus: disagreement, disagrees_with, confirmed_by, correction
    missing: list[MissingFact]
    disagreements: int
    vision: dict[str, Any] | None  # {model, status, note}: the vision reader's run over the unsure pages
    lock: dict[str, str] | None  # {"by": username, "at": ISO time} once a clinician locks the table


def _key(fact: Fact | MissingFact | dict[str, Any]) -> tuple:
    return (
        fact["page"],
        fact["metric"].replace(" ", "").lower(),
        fact["site"],
        fact["band"],
        fact["session"],
    )


def read_layouts(layouts: list[PageLayout]) -> list[tuple[PageLayout, Reading | None]]:
    from patients.readers import read_page

    return [(layout, read_page(layout)) for layout in layouts]


def table_row(fact: Fact) -> dict[str, Any]:
    """A reader's fact as a row of the table: its id names its source, and the review fields start empty."""
    return {
        **fact,
        "id": f"{fact['id']}|{fact['source']}",
        "disagreement": False,
        "disagrees_with": [],
        "confirmed_by": [],
        "correction": None,
    }


def merge_row(
    facts: list[dict[str, Any]], kept: dict[tuple, list[dict[str, Any]]], row: dict[str, Any]
) -> str:
    """Add one reading of a measurement to the table: "new" (nothing read it before), "agreed" (an earlier
    reading has the same value: that one stays, and says who confirmed it) or "disagreed" (kept beside the
    earlier readings, all of them marked; the table never picks one)."""
    from patients.readers.base import fold

    key = _key(row)
    group = kept.get(key)
    if not group:
        kept[key] = [row]
        facts.append(row)
        return "new"
    same = next((other for other in group if fold(other["value"]) == fold(row["value"])), None)
    if same is not None:
        by = f"{row['reader']} [{row['source']}]"
        if by not in same["confirmed_by"] and row["reader"] != same["reader"]:
            same["confirmed_by"].append(by)
        return "agreed"
    for other in group:
        other["disagreement"] = True
        other["disagrees_with"].append(row["id"])
        row["disagrees_with"].append(other["id"])
    row["disagreement"] = True
    # Beside the readings it disagrees with, so the table shows them together.
    facts.insert(facts.index(group[-1]) + 1, row)
    group.append(row)
    return "disagreed"


def unsure_reasons(quality: dict[str, Any], *, reader: str | None, missing: int, expected: int) -> list[str]:
    """Why a page is not fully read, from its reading measures; [] when it is (a reader knows the layout,
    every label and expected fact was found, no merged token is left, and the boxes were read surely)."""
    if not reader:
        return ["no reader knows this page's layout"]
    reasons = []
    if missing:
        reasons.append(f"{missing} of {expected} expected facts missing")
    if quality["labels_expected"] and quality["labels_found"] < quality["labels_expected"]:
        reasons.append(f"{quality['labels_found']} of {quality['labels_expected']} labels found")
    if quality["merged_tokens"]:
        reasons.append(f"{quality['merged_tokens']} merged tokens left")
    if not quality["cells_read"]:
        reasons.append("no table cell read")
    confidence = quality.get("mean_confidence")
    if confidence is not None and confidence < FULLY_READ_CONFIDENCE:
        reasons.append(f"mean confidence {confidence:.2f} (< {FULLY_READ_CONFIDENCE})")
    return reasons


def build_table(readings: list[tuple[PageLayout, Reading | None]], *, page_count: int) -> FactTable:
    """One table from every page's readings (a page may have two: its text layer and its OCR).

    Where two readings of the same measurement agree, the text layer's is kept (it is exact); where they
    disagree, both are kept and marked, never silently resolved."""
    by_page: dict[int, list[tuple[PageLayout, Reading | None]]] = {}
    for layout, reading in readings:
        by_page.setdefault(layout.page, []).append((layout, reading))
    facts: list[dict[str, Any]] = []
    missing: list[MissingFact] = []
    pages: list[PageQuality] = []
    disagreements = 0
    for number in range(1, page_count + 1):
        entries = by_page.get(number, [])
        # Text layer first: exact where it exists.
        entries.sort(key=lambda entry: entry[0].source != "text layer")
        kept: dict[tuple, list[dict[str, Any]]] = {}
        expected: set[tuple] = set()
        notes: list[str] = []
        quality = {"labels_found": 0, "labels_expected": 0, "cells_read": 0, "merged_tokens": 0}
        readers = []
        confidences = []
        for layout, reading in entries:
            if layout.boxes:
                confidences.extend(box.score for box in layout.boxes)
            if reading is None:
                continue
            readers.append(reading.reader)
            notes.extend(f"{layout.source}: {note}" for note in reading.notes)
            for name in quality:
                quality[name] = max(quality[name], getattr(reading, name))
            expected |= {
                (number, metric.replace(" ", "").lower(), site, band, session)
                for metric, site, band, session in reading.expected
            }
            for fact in reading.facts:
                if merge_row(facts, kept, table_row(fact)) == "disagreed":
                    disagreements += 1
        page_missing = sorted(expected - set(kept), key=str)
        for _, metric_key, site, band, session in page_missing:
            metric = _metric_name(readings, number, metric_key)
            missing.append(MissingFact(page=number, metric=metric, site=site, band=band, session=session))
        mean_confidence = round(sum(confidences) / len(confidences), 4) if confidences else None
        reader = readers[0] if readers else None
        page_facts = sum(1 for fact in facts if fact["page"] == number)
        unsure = unsure_reasons(
            {**quality, "mean_confidence": mean_confidence},
            reader=reader,
            missing=len(page_missing),
            expected=len(expected),
        )
        pages.append(
            PageQuality(
                page=number,
                width=round(entries[0][0].width, 2) if entries else None,
                height=round(entries[0][0].height, 2) if entries else None,
                sources=[layout.source for layout, _ in entries],
                reader=reader,
                **quality,
                mean_confidence=mean_confidence,
                facts=page_facts,
                expected=len(expected),
                missing=len(page_missing),
                fully_read=not unsure,
                unsure=unsure,
                vision=None,
                notes=notes,
            )
        )
    return FactTable(
        schema=SCHEMA_VERSION,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        pages=pages,
        facts=facts,
        missing=missing,
        disagreements=disagreements,
        vision=None,
        lock=None,
    )


def add_facts(table: FactTable, page: int, new: list[Fact]) -> dict[str, int]:
    """Merge another reader's facts for one page into a built table (the vision reader's, after the
    deterministic ones): new measurements are added (and no longer missing), agreeing ones confirm the
    reading already there, disagreeing ones are kept beside it and marked. Counts of each."""
    kept: dict[tuple, list[dict[str, Any]]] = {}
    for row in table["facts"]:
        kept.setdefault(_key(row), []).append(row)
    counts = {"new": 0, "agreed": 0, "disagreed": 0}
    for fact in new:
        if fact["page"] != page:
            raise ValueError(f"a fact of page {fact['page']} merged into page {page}")
        counts[merge_row(table["facts"], kept, table_row(fact))] += 1
    table["disagreements"] += counts["disagreed"]
    still = [m for m in table["missing"] if m["page"] != page or _key(m) not in kept]
    for quality in table["pages"]:
        if quality["page"] == page:
            quality["missing"] -= len(table["missing"]) - len(still)
            quality["facts"] = sum(1 for row in table["facts"] if row["page"] == page)
    table["missing"] = still
    return counts


def _metric_name(readings: list[tuple[PageLayout, Reading | None]], page: int, metric_key: str) -> str:
    """The printed spelling of a metric expected on a page (expected keys are compared without spaces)."""
    for layout, reading in readings:
        if layout.page != page or reading is None:
            continue
        for metric, *_ in reading.expected:
            if metric.replace(" ", "").lower() == metric_key:
                return metric
    return metric_key


def write_table(folder: Path, table: FactTable) -> Path:
    """Write facts.json whole or not at all (documents.files)."""
    path = folder / FACTS_FILE
    write_atomic(path, json.dumps(table, ensure_ascii=False, indent=1).encode("utf-8"))
    return path


def load_table(folder: Path) -> FactTable | None:
    path = folder / FACTS_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
