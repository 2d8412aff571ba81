"""WAVi pages: the summary page and the "P300 Rare Comparison" page.

Summary: a session table (number, date) and blocks of `Measure | Session 1 | Session 2 | Session 3 |
Target` tables side by side (performance, evoked potentials with test/retest rows, peak frequencies, state
ratios, assessment scores), read by the generic session-table reader with the session dates attached.

P300 Rare Comparison: one small `# UV MS` panel per electrode, laid out like the head (10-20), plus the
averages and the N100 central-frontal average. A panel's rows are the sessions, told apart only by text
colour; the page's Color Key says which colour is which session and its date. So: the colour key gives
colour -> session; every electrode label (repaired from the 10-20 vocabulary, and by its place in the head
when OCR garbled it) owns the values below it; each value takes its column from the panel's header and
its session from its colour.

Site Measures: WAVi's typed per-site tables, one `Site S1 S2 S3` table per measure type ("Peak Alpha
Frequency (Hz)"), several side by side. Each "Site" header opens a table reaching to the next one; its
title above names the metric and unit; every row is a 10-20 site (repaired from the vocabulary) and each
value takes the session whose right-aligned header it ends nearest. A table is expected to list all 19
sites for every session of its header.
"""

from __future__ import annotations

import itertools
import re
import statistics

from patients.layout import Box, PageLayout, group_rows
from patients.readers import generic
from patients.readers.base import (
    ELECTRODES,
    Reading,
    count_merged,
    fold,
    make_fact,
    nearest_colour,
    repair_electrode,
    text_of,
)

SUMMARY = "wavi-summary"
P300 = "wavi-p300"
SITES = "wavi-sites"
_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{4}")
# Standard 10-20 positions (x: left to right, y: front to back), to place a panel whose label OCR lost.
HEAD_POSITIONS = {
    "Fp1": (-0.3, -1.0), "Fp2": (0.3, -1.0),
    "F7": (-0.8, -0.5), "F3": (-0.4, -0.5), "Fz": (0.0, -0.5), "F4": (0.4, -0.5), "F8": (0.8, -0.5),
    "T3": (-1.0, 0.0), "C3": (-0.5, 0.0), "Cz": (0.0, 0.0), "C4": (0.5, 0.0), "T4": (1.0, 0.0),
    "T5": (-0.8, 0.5), "P3": (-0.4, 0.5), "Pz": (0.0, 0.5), "P4": (0.4, 0.5), "T6": (0.8, 0.5),
    "O1": (-0.3, 1.0), "O2": (0.3, 1.0),
}  # fmt: skip
AVERAGES = {
    ("AVG",): ("Average", "P300 Rare"),
    ("CF", "AVG"): ("Central-frontal average", "P300 Rare"),
    ("N100", "CF", "AVG"): ("Central-frontal average", "N100"),
    ("N1OO", "CF", "AVG"): ("Central-frontal average", "N100"),
}
COLUMNS = (("#", "trials", ""), ("UV", "amplitude", "\u00b5V"), ("MS", "latency", "ms"))
# What a WAVi summary page prints, section by section, for every session in its session table: a measure
# the reader does not find is reported missing (and the page is not fully read), not silently absent.
# Rows beyond these are read too; these are the ones a summary page must have.
SUMMARY_MEASURES = {
    "Performance": ("Reaction Time", "Reaction Time Variability", "Errors"),
    "Evoked Potentials": (
        "P300 Latency", "P300 Voltage", "P300 Latency Test/Retest", "P300 Voltage Test/Retest", "N100 Latency",
    ),
    "Peak Frequencies": ("Peak Alpha Frequency EC", "Peak Alpha Frequency EO"),
    "State Ratios": ("Theta/Beta Ratio", "Alpha EO/EC Ratio"),
    "Assessment Scores": ("PHQ-9", "Sleep Quality"),
}  # fmt: skip


# --- summary ------------------------------------------------------------------------------------------------


def session_dates(layout: PageLayout) -> tuple[dict[int, str], list[Box]]:
    """The session table: rows of a session number and its date under a "Session … Date" header."""
    dates: dict[int, str] = {}
    boxes: list[Box] = []
    rows = layout.rows()
    for index, row in enumerate(rows):
        words = [fold(b.text).lower() for b in row.boxes]
        if "session" in words and "date" in words:
            for data in rows[index + 1 : index + 12]:
                first = fold(data.boxes[0].text)
                date = next((b for b in data.boxes if _DATE.fullmatch(fold(b.text))), None)
                if not first.isdigit() or date is None:
                    break
                dates[int(first)] = fold(date.text)
                boxes.append(date)
            break
    return dates, boxes


def matches_summary(layout: PageLayout) -> bool:
    text = text_of(layout)
    return "measure" in text and "target" in text and "session" in text and "summary" in text


def read_summary(layout: PageLayout) -> Reading:
    dates, date_boxes = session_dates(layout)
    reading, _ = generic.read_session_tables(layout, reader=SUMMARY, dates=dates)
    for session, box in zip(sorted(dates), date_boxes, strict=True):
        reading.facts.append(
            make_fact(
                layout,
                reader=SUMMARY,
                metric="Session date",
                boxes=[box],
                session=session,
                session_date=dates[session],
            )
        )
    reading.labels_found += len(dates)
    if not dates:
        reading.notes.append("no session table found")
    # The page's known contents, for every session it has (from the session table, else the table headers).
    sessions = sorted(dates) or sorted({s for *_, s in reading.expected if s is not None}) or [1]
    known = [measure for measures in SUMMARY_MEASURES.values() for measure in measures]
    reading.expected += [(measure, None, None, s) for measure in known for s in sessions]
    reading.expected += [("Session date", None, None, s) for s in sessions]
    reading.labels_expected = len(SUMMARY_MEASURES) + len(sessions)
    reading.labels_found = min(reading.labels_found, reading.labels_expected)
    return reading


# --- P300 Rare Comparison ------------------------------------------------------------------------------------


def matches_p300(layout: PageLayout) -> bool:
    text = text_of(layout)
    return "rare" in text and "comparison" in text and "color key" in text


def colour_key(layout: PageLayout) -> tuple[dict[int, tuple[int, int, int]], dict[int, str], list[Box]]:
    """Session -> colour and date, from the "Session N: date" lines printed in their colour."""
    colours: dict[int, tuple[int, int, int]] = {}
    dates: dict[int, str] = {}
    boxes: list[Box] = []
    for row in layout.rows():
        text = fold(" ".join(b.text for b in row.boxes))
        for match in re.finditer(r"session\s*(\d)\s*:?\s*(\d{1,2}/\d{1,2}/\d{4})", text, re.I):
            date_box = next((b for b in row.boxes if fold(b.text).endswith(match.group(2))), None)
            if date_box is None or date_box.rgb() is None:
                continue
            session = int(match.group(1))
            colours[session] = date_box.rgb()  # type: ignore[assignment]
            dates[session] = match.group(2)
            boxes.append(date_box)
    return colours, dates, boxes


def _labels(layout: PageLayout) -> list[tuple[str, str, Box, str]]:
    """Panel labels: (site, metric, label box, how it was found)."""
    found: list[tuple[str, str, Box, str]] = []
    rows = layout.rows()
    for row in rows:
        # "N100" often reads as "N10O": compare averages with O folded to 0.
        words = [fold(b.text).upper().replace("O", "0").replace("AVG", "AVG") for b in row.boxes]
        words = [w.replace("0", "O") if w.strip("0") == "" else w for w in words]
        used: set[int] = set()
        for index, word in enumerate(words):
            if word != "AVG":
                continue
            for parts, (site, metric) in sorted(AVERAGES.items(), key=lambda item: -len(item[0])):
                start = index - len(parts) + 1
                if (
                    start >= 0
                    and tuple(words[start : index + 1]) == parts
                    and not used & set(range(start, index + 1))
                ):
                    boxes = row.boxes[start : index + 1]
                    label = Box(
                        " ".join(parts),
                        boxes[0].x0,
                        min(b.y0 for b in boxes),
                        boxes[-1].x1,
                        max(b.y1 for b in boxes),
                        min(b.score for b in boxes),
                        None,
                        layout.source,
                    )
                    found.append((site, metric, label, "average"))
                    used |= set(range(start, index + 1))
                    break
        for index, box in enumerate(row.boxes):
            if index in used:
                continue
            site = repair_electrode(box.text)
            if site is not None:
                how = "read" if fold(box.text).upper() == site.upper() else "repaired"
                found.append((site, "P300 Rare", box, how))
    return found


def _header_below(layout: PageLayout, label: Box, half: float) -> list[Box]:
    return [
        b
        for b in layout.boxes
        if fold(b.text).upper() in ("#", "UV", "MS")
        and label.y1 < b.cy < label.y1 + 2.5 * label.height
        and abs(b.cx - label.cx) < half
    ]


def _place_unknown(panels: dict[str, Box], candidates: list[Box]) -> dict[str, Box]:
    """Labels OCR could not read, named by where they sit in the head (a fit of the standard 10-20
    positions to the panels that were read)."""
    known = [(HEAD_POSITIONS[s], (b.cx, b.cy)) for s, b in panels.items() if s in HEAD_POSITIONS]
    if len(known) < 4:
        return {}
    fits = []
    for axis in (0, 1):
        xs = [k[0][axis] for k in known]
        ys = [k[1][axis] for k in known]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        var = sum((x - mx) ** 2 for x in xs) or 1.0
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
        fits.append((slope, my - slope * mx))
    placed: dict[str, Box] = {}
    missing = [s for s in ELECTRODES if s not in panels]
    for box in candidates:
        best = None
        for site in missing:
            px = fits[0][0] * HEAD_POSITIONS[site][0] + fits[0][1]
            py = fits[1][0] * HEAD_POSITIONS[site][1] + fits[1][1]
            distance = ((px - box.cx) ** 2 + (py - box.cy) ** 2) ** 0.5
            if best is None or distance < best[0]:
                best = (distance, site)
        if best and best[0] < 4 * box.height and best[1] not in placed:
            placed[best[1]] = box
            missing.remove(best[1])
    return placed


def _split_triple(text: str) -> list[str] | None:
    """ "3610.7348" or "36 10.7 348" as (#, µV, ms) when the digits allow exactly one reading."""
    parts = fold(text).split()
    if len(parts) == 3:
        return parts
    match = re.fullmatch(r"(\d{1,3})\s*(-?\d{1,2}\.\d)\s*(\d{2,3})", fold(text))
    return list(match.groups()) if match else None


def read_p300(layout: PageLayout) -> Reading:
    reading = Reading(reader=P300)
    key, dates, key_boxes = colour_key(layout)
    if not key:
        reading.notes.append("no colour key found: sessions cannot be told apart")
    for session, box in zip(sorted(dates), key_boxes, strict=False):
        reading.facts.append(
            make_fact(
                layout,
                reader=P300,
                metric="Session date",
                boxes=[box],
                text=dates[session],
                session=session,
                session_date=dates[session],
            )
        )
    labels = _labels(layout)
    typical = statistics.median([b.height for _, _, b, _ in labels]) if labels else 5.0
    half = 6 * typical
    panels: dict[tuple[str, str], tuple[Box, str]] = {}
    for site, metric, box, how in labels:
        if not _header_below(layout, box, half):
            continue  # an electrode name in running text, not a panel
        current = panels.get((site, metric))
        if current is None or (current[1] != "read" and how == "read"):
            panels[(site, metric)] = (box, how)
    # Panel labels nobody could name: bold short words with a "# UV MS" header under them.
    named = {id(box) for box, _ in panels.values()}
    unknown = [
        b for b in layout.boxes
        if id(b) not in named and len(fold(b.text)) <= 4 and fold(b.text).upper() not in ("#", "UV", "MS", "AVG", "CF", "N100")
        and not any(ch in b.text for ch in "./:") and _header_below(layout, b, half) and len(_header_below(layout, b, half)) >= 2
    ]  # fmt: skip
    placed = _place_unknown({s: b for (s, m), (b, _) in panels.items() if m == "P300 Rare"}, unknown)
    for site, box in placed.items():
        panels[(site, "P300 Rare")] = (box, "placed")
    reading.labels_found = len(panels)
    reading.labels_expected = len(ELECTRODES) + len(set(AVERAGES.values()))
    # Every panel of the head and the averages, for every session of the colour key (three when the key
    # was not read): what the page must have, whatever could be read of it.
    reading.expected += [("Session date", None, None, session) for session in sorted(key) or [1, 2, 3]]
    for site in [*ELECTRODES, *dict.fromkeys(s for s, _ in AVERAGES.values())]:
        for metric in ("P300 Rare", "N100"):
            if metric == "N100" and site != "Central-frontal average":
                continue
            for session in sorted(key) or [1, 2, 3]:
                for _, name, _ in COLUMNS:
                    reading.expected.append((f"{metric} {name}", site, None, session))

    # Column anchors relative to the label centre, from the panels whose header was read whole.
    offsets: dict[str, list[float]] = {"#": [], "UV": [], "MS": []}
    for box, _ in panels.values():
        for h in _header_below(layout, box, half):
            offsets[fold(h.text).upper()].append(h.x1 - box.cx)
    anchor_offset = {name: statistics.median(v) for name, v in offsets.items() if v}
    if len(anchor_offset) < 3:
        reading.notes.append("panel header (# UV MS) not found")
        return reading

    for (site, metric), (label, how) in panels.items():
        header = _header_below(layout, label, half)
        header_y = statistics.fmean(b.cy for b in header)
        line = max(statistics.fmean(b.height for b in header), typical) * 1.3
        anchors = {name: label.cx + off for name, off in anchor_offset.items()}
        left = min(anchors.values()) - 3.5 * typical
        right = max(anchors.values()) + 1.0 * typical
        values = [
            b for b in layout.boxes
            if header_y + 0.5 * line < b.cy < header_y + 3.9 * line and left <= b.cx <= right and b not in header
        ]  # fmt: skip
        reading.merged_tokens += count_merged(values)
        certainty_label = {"read": 1.0, "average": 1.0, "repaired": 0.95, "placed": 0.85}[how]
        for row in group_rows(values):
            cells = _assign_columns(row.boxes, anchors)
            session_votes = [nearest_colour(b.rgb(), key) for b in row.boxes]
            votes = [s for s, sure in session_votes if s is not None and sure > 0]
            if not votes:
                continue
            session = statistics.mode(votes)
            sure = statistics.fmean(c for s, c in session_votes if s == session)
            for column, name, unit in COLUMNS:
                box = cells.get(column)
                if box is None:
                    continue
                text = box.text if isinstance(box, Box) else box[1]
                boxes = [box if isinstance(box, Box) else box[0]]
                reading.cell(
                    make_fact(
                        layout,
                        reader=P300,
                        metric=f"{metric} {name}",
                        boxes=boxes,
                        text=text,
                        unit=unit,
                        site=site,
                        session=session,
                        session_date=dates.get(session),
                        section="P300 Rare Comparison",
                        certainty=certainty_label * (0.7 + 0.3 * sure),
                    )
                )
    return reading


def _assign_columns(boxes: list[Box], anchors: dict[str, float]) -> dict[str, Box | tuple[Box, str]]:
    """Each value to the column whose right edge it ends nearest (the columns are right-aligned); a box
    holding a whole merged row is split by the (#, µV, ms) pattern."""
    cells: dict[str, Box | tuple[Box, str]] = {}
    if len(boxes) == 1:
        triple = _split_triple(boxes[0].text)
        if triple:
            return {name: (boxes[0], part) for (name, _, _), part in zip(COLUMNS, triple, strict=True)}
    for box in boxes:
        name = min(anchors, key=lambda n: abs(anchors[n] - box.x1))
        if name not in cells:
            cells[name] = box
    return cells


# --- Site Measures: typed per-site tables ---------------------------------------------------------------------

_SESSION_HEADER = re.compile(r"^S(\d{1,2})$")
_TITLE_UNIT = re.compile(r"^(.*?)\s*\(([^)]{1,8})\)$")


def _site_headers(layout: PageLayout) -> list[tuple[int, Box, list[tuple[int, Box]]]]:
    """(row index, "Site" box, [(session, header box)]) for every table header on the page."""
    found = []
    for index, row in enumerate(layout.rows()):
        current: tuple[int, Box, list[tuple[int, Box]]] | None = None
        for box in row.boxes:
            text = fold(box.text)
            if text.lower() == "site":
                current = (index, box, [])
                found.append(current)
            elif current is not None and (match := _SESSION_HEADER.match(text.upper())):
                current[2].append((int(match.group(1)), box))
    return [header for header in found if len(header[2]) >= 2]


def matches_sites(layout: PageLayout) -> bool:
    return "site measures" in text_of(layout) and bool(_site_headers(layout))


def _site_dates(layout: PageLayout) -> dict[int, str]:
    text = fold(" ".join(b.text for b in layout.boxes))
    return {
        int(m.group(1)): m.group(2) for m in re.finditer(r"\bS(\d{1,2})\s*:\s*(\d{1,2}/\d{1,2}/\d{4})", text)
    }


def read_sites(layout: PageLayout) -> Reading:
    reading = Reading(reader=SITES)
    rows = layout.rows()
    headers = _site_headers(layout)
    dates = _site_dates(layout)
    for session, date in sorted(dates.items()):
        box = next((b for b in layout.boxes if fold(b.text).endswith(date)), None)
        reading.facts.append(
            make_fact(
                layout, reader=SITES, metric="Session date", boxes=[box] if box else [], text=date,
                session=session, session_date=date,
            )
        )  # fmt: skip
    lefts = sorted(site.x0 for _, site, _ in headers)
    for index, site_box, columns in headers:
        left = site_box.x0
        right = next((x for x in lefts if x > left + site_box.width), layout.width)
        line = max(site_box.height, 1.0)
        title_row = rows[index - 1] if index else None
        title_boxes = [b for b in (title_row.boxes if title_row else []) if left - 1 <= b.x0 < right - line]
        title = fold(" ".join(b.text for b in title_boxes))
        match = _TITLE_UNIT.match(title)
        metric, unit = (match.group(1), match.group(2)) if match else (title or "Site measure", "")
        unit = unit.replace("u", "\u00b5") if unit.lower() == "uv" else unit
        sessions = [session for session, _ in columns]
        reading.labels_expected += len(ELECTRODES)
        reading.expected += [(metric, site, None, s) for site in ELECTRODES for s in sessions]
        step = min((b.x1 - a.x1 for (_, a), (_, b) in itertools.pairwise(columns)), default=4 * line)
        below = [
            b
            for b in layout.boxes
            if left - line <= b.x0 < right - 0.5 * line and b.cy > site_box.y1 + 0.3 * line
        ]
        previous = site_box.cy
        seen: set[str] = set()
        for data in group_rows(below):
            if data.cy - previous > 5 * line:  # a lost row or two leaves a gap; a caption ends it
                break
            site = repair_electrode(data.boxes[0].text)
            if site is None or site in seen:
                break
            previous = data.cy
            seen.add(site)
            for session, box in reading.labelled_row(data, [(s, h.x1) for s, h in columns], step=step):
                reading.cell(
                    make_fact(
                        layout, reader=SITES, metric=metric, boxes=[box], unit=unit, site=site, session=session,
                        session_date=dates.get(session), section=title,
                        norm="Z-score against the age-matched norm" if unit == "Z" else "",
                    )
                )  # fmt: skip
    reading.expected += [("Session date", None, None, s) for s in sorted(dates)]
    if not headers:
        reading.notes.append("no Site / S1 … table header found")
    return reading
