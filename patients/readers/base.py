"""What every page reader shares: the fact it produces, value parsing, label repair, colour matching.

A reader gets a `PageLayout` (OCR boxes or text-layer words, both with positions and colours) and returns
a `Reading`: the facts it found on the page, the facts a page of its layout must have (so a missing one is
reported as missing), and how well the page was read.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass, field
from typing import TypedDict, TypeVar

from patients.layout import Box, PageLayout, Row, is_merged_token

# 10-20 electrodes, canonical spelling; vendors print them in capitals (FP1, FZ) and OCR reads O as 0.
ELECTRODES = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz", "C4", "T4", "T5", "P3", "Pz", "P4", "T6",
    "O1", "O2",
)  # fmt: skip
_BY_UPPER = {name.upper(): name for name in ELECTRODES}
# Characters OCR confuses in electrode names, each with what it may really be.
_CONFUSIONS = {
    "0": "O",
    "O": "0",
    "2": "Z",
    "Z": "2",
    "1": "I",
    "I": "1",
    "L": "1",
    "l": "1",
    "5": "S",
    "8": "B",
}
K = TypeVar("K")
PLACEHOLDERS = {"-", "N/A", "NA", "<0", "--"}
DASHES = "\u2013\u2014\u2212"  # en dash, em dash, minus sign: read and compared as "-"
_NUMBER = re.compile(r"^[<>]?-?\d+(?:\.\d+)?$")
UNITS = {"ms", "uv", "\u00b5v", "\u03bcv", "hz", "sec", "s", "%", "z", "words"}


class Fact(TypedDict):
    id: str  # stable within the table: page, reader, metric, site, band, session
    page: int
    metric: str
    section: str  # the heading the value sits under ("" when none)
    site: str | None  # 10-20 electrode or an average ("Average", "Central-frontal average")
    band: str | None
    session: int | None
    session_date: str | None
    value: str  # as read from the page, dash variants folded to "-"
    read_as: str  # the recogniser's text when letters in a number were taken for digits ("" otherwise)
    number: float | None  # parsed value; None for placeholders (-, N/A, <0)
    placeholder: bool
    unit: str
    target: str  # vendor target range printed beside it ("" when none); not a normative Z-score
    norm: str  # for Z-scores: what the norm is ("" otherwise)
    reader: str
    source: str  # "OCR" or "text layer"
    # 0..1: recognition score times the reader's certainty; a vision reading's says what the page's own text
    # shows of it (patients.readers.vision.locate); None: a vision reading from before that
    confidence: float | None
    box: list[float]  # x0, y0, x1, y1 in PDF points from the page's top-left corner


@dataclass
class Reading:
    reader: str
    facts: list[Fact] = field(default_factory=list)
    expected: list[tuple[str, str | None, str | None, int | None]] = field(default_factory=list)
    labels_found: int = 0
    labels_expected: int = 0
    cells_read: int = 0
    merged_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def cell(self, fact: Fact) -> None:
        """A value read from a table cell: kept, and counted in the page's cells read."""
        self.cells_read += 1
        self.facts.append(fact)

    def labelled_row(self, row: Row, columns: list[tuple[K, float]], *, step: float) -> list[tuple[K, Box]]:
        """A row led by its label (a site): the values right of the label, each to the column whose header
        ends nearest its right edge (`by_right_edge`); the label and any merged tokens counted."""
        self.labels_found += 1
        values = [box for box in row.boxes[1:] if box.x0 > row.boxes[0].x1]
        self.merged_tokens += count_merged(values)
        return by_right_edge(values, columns, step=step)


def fold(text: str) -> str:
    """Dash variants as "-", "µ" spelled one way, whitespace squeezed."""
    for dash in DASHES:
        text = text.replace(dash, "-")
    return re.sub(r"\s+", " ", text.replace("\u03bc", "\u00b5")).strip()


# Letters OCR reads for digits; only used where a whole cell becomes a number by them.
_DIGIT_LOOKALIKES = str.maketrans(
    {"o": "0", "O": "0", "D": "0", "l": "1", "I": "1", "|": "1", "S": "5", "B": "8"}
)


def repair_number(text: str) -> str:
    """ "1o.5" -> "10.5" when the cell is a number but for letters that look like digits; else as read."""
    value = fold(text)
    if _NUMBER.match(value) or not re.search(r"\d", value):
        return value
    repaired = value.translate(_DIGIT_LOOKALIKES)
    return repaired if _NUMBER.match(repaired) else value


def parse_value(text: str) -> tuple[str, float | None, bool]:
    """(value as read, number or None, is a placeholder)."""
    value = repair_number(text)
    if value in PLACEHOLDERS or value.upper() in PLACEHOLDERS:
        return value, None, True
    core = value.lstrip("<>")
    try:
        return value, float(core), False
    except ValueError:
        return value, None, False


def split_unit(text: str) -> tuple[str, str]:
    """ "363 ms" -> ("363", "ms"); "15.4 µV" -> ("15.4", "µV"); "N/A" -> ("N/A", "")."""
    value = fold(text)
    parts = value.rsplit(" ", 1)
    if len(parts) == 2 and parts[1].lower() in UNITS and parts[0]:
        return parts[0], parts[1].replace("u", "\u00b5") if parts[1].lower() == "uv" else parts[1]
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ms|Hz|sec|%)", value)
    if match:
        return match.group(1), match.group(2)
    return value, ""


def repair_electrode(text: str) -> str | None:
    """An electrode name read by OCR, repaired from the 10-20 vocabulary (`01` is `O1`, `F2` under a head
    layout is `FZ`); None when the text is not one."""
    upper = fold(text).upper().replace(" ", "")
    if upper in _BY_UPPER:
        return _BY_UPPER[upper]
    candidates = {upper}
    for index, char in enumerate(upper):
        if char in _CONFUSIONS:
            candidates |= {c[:index] + _CONFUSIONS[char] + c[index + 1 :] for c in list(candidates)}
    found = {_BY_UPPER[c] for c in candidates if c in _BY_UPPER}
    return found.pop() if len(found) == 1 else None


def hue_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """How different two text colours are, in hue and saturation (washed-out print keeps its hue)."""
    ha, sa, va = colorsys.rgb_to_hsv(*(c / 255 for c in a))
    hb, sb, vb = colorsys.rgb_to_hsv(*(c / 255 for c in b))
    dh = min(abs(ha - hb), 1 - abs(ha - hb))
    return dh * 2 + abs(sa - sb) * 0.5 + abs(va - vb) * 0.2


def nearest_colour(
    colour: tuple[int, int, int] | None, key: dict[int, tuple[int, int, int]]
) -> tuple[int | None, float]:
    """The session whose key colour is nearest, and how sure (0..1); (None, 0) for grey/black print."""
    if colour is None or not key:
        return None, 0.0
    _, saturation, _ = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
    if saturation < 0.15:
        return None, 0.0
    ranked = sorted((hue_distance(colour, rgb), session) for session, rgb in key.items())
    best = ranked[0]
    margin = (ranked[1][0] - best[0]) if len(ranked) > 1 else 1.0
    return best[1], max(0.0, min(1.0, margin / 0.15))


def phrases(row: Row, *, gap: float = 0.8) -> list[list[Box]]:
    """A row's boxes grouped into cells: neighbours closer than `gap` print heights apart are one phrase,
    except that two numbers are never one phrase (a number is a cell of its own, its unit joins it)."""
    groups: list[list[Box]] = []
    for box in row.boxes:
        if groups:
            last = groups[-1][-1]
            close = box.x0 - last.x1 <= gap * max(last.height, box.height, 1.0)
            both_numbers = _NUMBER.match(fold(last.text)) and _NUMBER.match(fold(box.text))
            if close and not both_numbers:
                groups[-1].append(box)
                continue
        groups.append([box])
    return groups


def joined(boxes: list[Box]) -> str:
    """Boxes' text left to right; a space only where the print leaves one (OCR may cut a word in two)."""
    parts: list[str] = []
    for previous, box in zip([None, *boxes], boxes, strict=False):
        if previous is not None:
            parts.append(" " if box.x0 - previous.x1 > 0.2 * min(previous.height, box.height) else "")
        parts.append(box.text)
    return "".join(parts)


def label_text(boxes: list[Box]) -> str:
    """A row label as words: "LatencyTest" (a space OCR did not see) becomes "Latency Test"."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", fold(joined(boxes)))


def union_box(boxes: list[Box]) -> list[float]:
    return [
        round(min(b.x0 for b in boxes), 1),
        round(min(b.y0 for b in boxes), 1),
        round(max(b.x1 for b in boxes), 1),
        round(max(b.y1 for b in boxes), 1),
    ]


def make_fact(
    layout: PageLayout,
    *,
    reader: str,
    metric: str,
    boxes: list[Box],
    text: str | None = None,
    unit: str = "",
    site: str | None = None,
    band: str | None = None,
    session: int | None = None,
    session_date: str | None = None,
    section: str = "",
    target: str = "",
    norm: str = "",
    certainty: float = 1.0,
) -> Fact:
    raw = fold(text if text is not None else joined(boxes))
    value, number, placeholder = parse_value(raw)
    score = min((box.score for box in boxes), default=0.0)
    if value != raw:
        certainty *= 0.6  # a letter taken for a digit: keep the reading, say it is unsure
    key = "|".join(str(part) for part in (layout.page, reader, metric, site, band, session))
    return Fact(
        id=key,
        page=layout.page,
        metric=metric,
        section=section,
        site=site,
        band=band,
        session=session,
        session_date=session_date,
        value=value,
        read_as=raw if raw != value else "",
        number=number,
        placeholder=placeholder,
        unit=unit,
        target=fold(target),
        norm=norm,
        reader=reader,
        source=layout.source,
        confidence=round(score * certainty, 4),
        box=union_box(boxes) if boxes else [],
    )


def by_right_edge(boxes: list[Box], columns: list[tuple[K, float]], *, step: float) -> list[tuple[K, Box]]:
    """Right-aligned values (a site row of a Z or per-site table) to the column whose header ends nearest
    each one's right edge, within 0.45 of the column pitch `step`; the first value a column gets is its."""
    taken: set[K] = set()
    placed: list[tuple[K, Box]] = []
    for box in boxes:
        key, right = min(columns, key=lambda column: abs(column[1] - box.x1))
        if abs(right - box.x1) > 0.45 * step or key in taken:
            continue
        taken.add(key)
        placed.append((key, box))
    return placed


def count_merged(boxes: list[Box]) -> int:
    return sum(1 for box in boxes if is_merged_token(fold(box.text)))


def text_of(layout: PageLayout) -> str:
    return fold(" ".join(box.text for box in layout.boxes)).lower()
