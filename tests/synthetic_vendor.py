"""Synthetic vendor pages as hard as the real exports: dense, small print, colour-coded sessions. No patient data.

Each page is drawn once as a list of printed pieces (text with position, size, colour; lines, boxes, a head
outline) and can be written either as a bitmap embedded in the PDF with no text layer (`image`) or as real
PDF text (`text`), so the same readers are tested on OCR boxes and on text-layer words. Every page returns
the facts it printed — metric, site, band, session, value exactly as printed, unit — so tests and the
benchmark score the fact table against the truth.

Pages (all numbers made up from a seed):
- `wavi_summary`: session table with dates; performance, evoked potentials with test/retest rows (a "-" for
  session 1, `<0`), peak frequencies and state ratios, assessment scores; target ranges with en dashes
  ("253 to 364 ms" printed with an en dash, likewise "0.9 to 2.2", "9.0 to 11.0 Hz"); an `N/A`; thin column gaps.
- `wavi_p300`: "P300 Rare Comparison": one tiny `# UV MS` panel per electrode in the 10-20 head layout plus
  the averages and the N100 central-frontal average, rows = sessions told apart only by text colour (rows
  ordered by latency, not by session), and a Color Key mapping colours to sessions and dates.
- `wavi_sites`: WAVi's typed per-site tables, four `Site S1 S2 S3` tables (peak alpha frequency, theta/beta
  ratio, relative alpha, alpha asymmetry Z) side by side in tiny print, "-" for unrecorded sessions.
- `neuroguide_z`: a NeuroGuide-style site by band Z-score table, 19 sites by 10 bands, signed values.
- `generic_rows`: rows like "Trail Making Test A 41 sec 33 sec 47 sec 38-64 sec".
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, TypedDict

from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path(__file__).resolve().parent.parent / "static" / "fonts"
FONT = FONT_DIR / "DejaVuSans.ttf"
FONT_BOLD = FONT_DIR / "DejaVuSans-Bold.ttf"
A4 = (595.28, 841.89)  # points
BLACK = (20, 20, 20)
GREY = (150, 150, 150)
FAINT = (196, 196, 196)  # light toner: lighter than patients.layout.INK_LEVEL, still legible to an eye
# WAVi-like session colours: purple, red, green.
SESSION_COLOURS = {1: (112, 48, 160), 2: (200, 16, 16), 3: (0, 128, 40)}
SESSION_COLOUR_NAMES = {1: "purple", 2: "red", 3: "green"}
DASH = "\u2013"  # en dash, as the vendors print ranges
MICRO = "\u00b5"

# 10-20 electrodes as WAVi prints them, with the canonical name and the panel position in the head layout.
HEAD_LAYOUT = [
    ("FP1", "Fp1", 0.38, 0.10),
    ("FP2", "Fp2", 0.62, 0.10),
    ("F7", "F7", 0.10, 0.27),
    ("F3", "F3", 0.30, 0.27),
    ("FZ", "Fz", 0.50, 0.27),
    ("F4", "F4", 0.70, 0.27),
    ("F8", "F8", 0.90, 0.27),
    ("T3", "T3", 0.06, 0.45),
    ("C3", "C3", 0.28, 0.45),
    ("CZ", "Cz", 0.50, 0.45),
    ("C4", "C4", 0.72, 0.45),
    ("T4", "T4", 0.94, 0.45),
    ("T5", "T5", 0.10, 0.63),
    ("P3", "P3", 0.30, 0.63),
    ("PZ", "Pz", 0.50, 0.63),
    ("P4", "P4", 0.70, 0.63),
    ("T6", "T6", 0.90, 0.63),
    ("O1", "O1", 0.38, 0.80),
    ("O2", "O2", 0.62, 0.80),
]
NEUROGUIDE_SITES = [canonical for _, canonical, _, _ in HEAD_LAYOUT]
NEUROGUIDE_BANDS = [
    "Delta",
    "Theta",
    "Alpha",
    "Beta",
    "High Beta",
    "Alpha 1",
    "Alpha 2",
    "Beta 1",
    "Beta 2",
    "Beta 3",
]


class TrueFact(TypedDict):
    page: int
    metric: str
    site: str | None
    band: str | None
    session: int | None
    value: str  # exactly as printed
    unit: str
    target: str  # the target range printed beside it ("" when none)


@dataclass
class Ink:
    x: float  # points from the left; the right edge when align == "right"
    y: float  # points from the top, top of the line box
    text: str
    size: float = 7.0
    colour: tuple[int, int, int] = BLACK
    bold: bool = False
    align: Literal["left", "right", "center"] = "left"


@dataclass
class Shape:
    kind: Literal["rect", "line", "ellipse"]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in points
    colour: tuple[int, int, int] = GREY
    width: float = 0.5


@dataclass
class VendorPage:
    kind: str
    inks: list[Ink] = field(default_factory=list)
    shapes: list[Shape] = field(default_factory=list)
    facts: list[TrueFact] = field(default_factory=list)
    value_inks: list[tuple[Ink, int]] = field(default_factory=list)  # a printed value and its fact's index

    def text(self, *args, **kwargs) -> Ink:
        ink = Ink(*args, **kwargs)
        self.inks.append(ink)
        return ink

    def fact(
        self, metric: str, value: str, *, unit: str = "", site=None, band=None, session=None, target: str = ""
    ) -> None:
        self.facts.append(
            TrueFact(
                page=0,
                metric=metric,
                site=site,
                band=band,
                session=session,
                value=value,
                unit=unit,
                target=target,
            )
        )


_fonts: dict[tuple[bool, float], ImageFont.FreeTypeFont] = {}


def font(size: float, *, bold: bool = False) -> ImageFont.FreeTypeFont:
    key = (bold, round(size, 2))
    if key not in _fonts:
        _fonts[key] = ImageFont.truetype(str(FONT_BOLD if bold else FONT), size=size)
    return _fonts[key]


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """Printed width in points (font metrics at 100 pt, scaled)."""
    return font(100, bold=bold).getlength(text) * size / 100


@dataclass
class Sessions:
    """The three sessions a report prints. With `history` (a seed for one patient's whole history), every
    number of a session is drawn from that seed and the session's date, so two reports that both print a
    session print the same numbers for it, as two exports of one patient do; without it, from the page's
    own generator, in the order the pages always drew them."""

    dates: list[date]
    history: int | None = None

    def label(self, index: int) -> str:
        return self.dates[index - 1].strftime("%m/%d/%Y")

    def rng(self, page_rng: random.Random, index: int, key: str) -> random.Random:
        if self.history is None:
            return page_rng
        return random.Random(f"{self.history}|{self.dates[index - 1].isoformat()}|{key}")


def patient_history(seed: int = 5, count: int = 6) -> list[date]:
    """One patient's visit dates, two to five months apart: reports of this patient print three at a time."""
    rng = random.Random(seed)
    dates = [date(2024, 1, 8) + timedelta(days=rng.randint(0, 60))]
    for _ in range(count - 1):
        dates.append(dates[-1] + timedelta(days=rng.randint(60, 150)))
    return dates


def make_sessions(rng: random.Random, count: int = 3) -> Sessions:
    first = date(2024, 1, 8) + timedelta(days=rng.randint(0, 200))
    dates = [first]
    for _ in range(count - 1):
        dates.append(dates[-1] + timedelta(days=rng.randint(60, 150)))
    return Sessions(dates)


def _header(page: VendorPage, title: str, subtitle: str, label: str) -> None:
    page.text(36, 28, title, size=13, bold=True)
    page.text(36, 46, subtitle, size=7, colour=(90, 90, 90))
    page.text(A4[0] - 36, 30, f"Patient ID: {label}", size=7, align="right")
    page.shapes.append(Shape("line", (36, 58, A4[0] - 36, 58), colour=(60, 60, 60), width=0.8))


# --- WAVi summary -------------------------------------------------------------------------------------------


def _range(low: float, high: float, digits: int) -> str:
    return f"{low:.{digits}f}{DASH}{high:.{digits}f}"


def wavi_summary(rng: random.Random, sessions: Sessions, *, label: str) -> VendorPage:
    page = VendorPage("wavi_summary")
    _header(page, "WAVi Brain Health Report \u2014 Summary", "All sessions, eyes open and eyes closed", label)
    y = 70.0
    page.text(36, y, "Session", size=7, bold=True)
    page.text(100, y, "Date", size=7, bold=True)
    page.text(170, y, "Age", size=7, bold=True)
    page.text(210, y, "Protocol", size=7, bold=True)
    for index in range(1, len(sessions.dates) + 1):
        y += 10
        page.text(36, y, str(index), size=7)
        page.text(100, y, sessions.label(index), size=7)
        page.text(170, y, str(34 + (index == 3)), size=7)
        page.text(210, y, "EO/EC + P300 Rare", size=7)
        page.fact("Session date", sessions.label(index), session=index)
    y += 18

    # Columns: label, three sessions, target. Thin gaps: the value columns are just wide enough.
    label_x, first_col, col_w, target_x = 36, 205, 58, 400
    rows: list[tuple[str, list[tuple[str, list[str], str, str]]]] = []

    def measure(name: str, unit: str, values: list[str], target: str) -> tuple[str, list[str], str, str]:
        return (name, values, unit, target)

    def draw(key: str) -> list[random.Random]:
        return [sessions.rng(rng, index, key) for index in (1, 2, 3)]

    rt = [str(r.randint(240, 380)) for r in draw("rt")]
    rtv = [str(r.randint(30, 80)) for r in draw("rtv")]
    first, _, third = draw("errors")
    errors = [str(first.randint(0, 4)), "N/A", str(third.randint(0, 4))]
    rows.append(
        (
            "Performance",
            [
                measure("Reaction Time", "ms", rt, f"253{DASH}364 ms"),
                measure("Reaction Time Variability", "ms", rtv, f"20{DASH}65 ms"),
                measure("Errors", "", errors, f"0{DASH}3"),
            ],
        )
    )
    p3l = [str(r.randint(290, 380)) for r in draw("p3l")]
    p3v = [f"{r.uniform(4, 16):.1f}" for r in draw("p3v")]
    n1l = [str(r.randint(85, 130)) for r in draw("n1l")]
    retest_l = ["-", str(abs(int(p3l[1]) - int(p3l[0]))), str(abs(int(p3l[2]) - int(p3l[1])))]
    retest_v = ["-", f"{abs(float(p3v[1]) - float(p3v[0])):.1f}", "<0"]
    rows.append(
        (
            "Evoked Potentials",
            [
                measure("P300 Latency", "ms", p3l, f"253{DASH}364 ms"),
                measure("P300 Voltage", f"{MICRO}V", p3v, f"5.0{DASH}15.0 {MICRO}V"),
                measure("P300 Latency Test/Retest", "ms", retest_l, "< 25 ms"),
                measure("P300 Voltage Test/Retest", f"{MICRO}V", retest_v, f"< 3.0 {MICRO}V"),
                measure("N100 Latency", "ms", n1l, f"80{DASH}120 ms"),
            ],
        )
    )
    paf_ec = [f"{r.uniform(8.5, 11.5):.1f}" for r in draw("paf_ec")]
    paf_eo = [f"{r.uniform(8.5, 11.5):.1f}" for r in draw("paf_eo")]
    rows.append(
        (
            "Peak Frequencies",
            [
                measure("Peak Alpha Frequency EC", "Hz", paf_ec, f"9.0{DASH}11.0 Hz"),
                measure("Peak Alpha Frequency EO", "Hz", paf_eo, f"9.0{DASH}11.0 Hz"),
            ],
        )
    )
    tbr = [f"{r.uniform(0.8, 3.4):.2f}" for r in draw("tbr")]
    ab = [f"{r.uniform(0.2, 0.9):.2f}" for r in draw("ab")]
    rows.append(
        (
            "State Ratios",
            [
                measure("Theta/Beta Ratio", "", tbr, _range(0.9, 2.2, 1)),
                measure("Alpha EO/EC Ratio", "", ab, _range(0.3, 0.7, 1)),
            ],
        )
    )
    phq = [str(r.randint(0, 20)) for r in draw("phq")]
    sleep = [str(r.randint(0, 21)) for r in draw("sleep")]
    rows.append(
        (
            "Assessment Scores",
            [
                measure("PHQ-9", "", phq, f"0{DASH}4"),
                measure("Sleep Quality", "", sleep, f"0{DASH}5"),
            ],
        )
    )

    # Two blocks side by side, as the vendor prints them: a line read straight across mixes both.
    top = y
    blocks = {
        0: (36.0, 150.0, 37.0, 262.0),
        1: (306.0, 410.0, 37.0, 522.0),
    }  # label, first value, step, target
    block_of = {"Performance": 0, "Evoked Potentials": 0, "Peak Frequencies": 1, "State Ratios": 1}
    ys = {0: top, 1: top}
    for section, measures in rows:
        block = block_of.get(section, 1)
        label_x, first_col, col_w, target_x = blocks[block]
        y = ys[block]
        page.text(label_x, y, section, size=7.5, bold=True)
        y += 10
        page.text(label_x, y, "Measure", size=6, bold=True, colour=(70, 70, 70))
        for index in range(1, 4):
            page.text(
                first_col + (index - 1) * col_w, y, f"Session {index}", size=6, bold=True, colour=(70, 70, 70)
            )
        page.text(target_x, y, "Target", size=6, bold=True, colour=(70, 70, 70))
        y += 8.5
        for name, values, unit, target in measures:
            page.text(label_x, y, name, size=6.5)
            for index, value in enumerate(values, start=1):
                printed = value if value in ("-", "N/A", "<0") or not unit else f"{value} {unit}"
                ink = page.text(first_col + (index - 1) * col_w, y, printed, size=6.5)
                page.fact(name, value, unit=unit, session=index, target=target)
                page.value_inks.append((ink, len(page.facts) - 1))
            page.text(target_x, y, target, size=6.5)
            y += 8.8
        page.shapes.append(Shape("line", (label_x, y + 1, target_x + 38, y + 1), colour=(200, 200, 200)))
        ys[block] = y + 9
    y = max(ys.values())
    page.text(
        36, y + 6, "Targets are vendor reference ranges, not normative Z-scores.", size=6, colour=(90, 90, 90)
    )
    return page


# --- WAVi P300 Rare Comparison ------------------------------------------------------------------------------


def _p300_panel(
    page: VendorPage,
    rng: random.Random,
    *,
    x: float,
    y: float,
    printed: str,
    site: str,
    metric: str,
    n100: bool,
    sessions: Sessions,
) -> None:
    """A tiny `# UV MS` table, its rows the sessions in colour, ordered by latency (not by session)."""
    size = 5.6
    line = size * 1.28
    col_hash, col_uv, col_ms = 9.5, 24.5, 37.5  # right edges, points from the panel's left
    page.text(x + 20, y, printed, size=6.2, bold=True, align="center")
    page.shapes.append(
        Shape("rect", (x - 2, y - 2, x + 42, y + line * 5 + 1), colour=(190, 190, 190), width=0.4)
    )
    page.text(x + col_hash, y + line, "#", size=size, align="right")
    page.text(x + col_uv, y + line, "UV", size=size, align="right")
    page.text(x + col_ms, y + line, "MS", size=size, align="right")
    rows = []
    for session in (1, 2, 3):
        draw = sessions.rng(rng, session, f"{metric}|{printed}")
        count = str(draw.randint(18, 64))
        if n100:
            uv = f"{-draw.uniform(1.5, 9.5):.1f}"
            ms = str(draw.randint(80, 140))
        else:
            uv = f"{draw.uniform(2.0, 19.9):.1f}"
            ms = str(draw.randint(250, 460))
        rows.append((int(ms), session, count, uv, ms))
    for row_index, (_, session, count, uv, ms) in enumerate(sorted(rows)):
        ry = y + line * (2 + row_index)
        colour = SESSION_COLOURS[session]
        page.text(x + col_hash, ry, count, size=size, colour=colour, align="right")
        page.text(x + col_uv, ry, uv, size=size, colour=colour, align="right")
        page.text(x + col_ms, ry, ms, size=size, colour=colour, align="right")
        page.fact(f"{metric} trials", count, unit="", site=site, session=session)
        page.fact(f"{metric} amplitude", uv, unit=f"{MICRO}V", site=site, session=session)
        page.fact(f"{metric} latency", ms, unit="ms", site=site, session=session)


def wavi_p300(rng: random.Random, sessions: Sessions, *, label: str) -> VendorPage:
    page = VendorPage("wavi_p300")
    _header(page, "P300 Rare Comparison", "Auditory oddball, rare tone; peak per session", label)
    # Color Key, top right.
    kx, ky = 400, 66
    page.shapes.append(Shape("rect", (kx - 4, ky - 4, A4[0] - 36, ky + 44), colour=(120, 120, 120)))
    page.text(kx, ky, "Color Key", size=7, bold=True)
    for index in (1, 2, 3):
        page.text(
            kx,
            ky + 10 * index,
            f"Session {index}: {sessions.label(index)}",
            size=6.5,
            colour=SESSION_COLOURS[index],
        )
        page.fact("Session date", sessions.label(index), session=index)
    # Head outline.
    left, top, width, height = 40.0, 130.0, 515.0, 520.0
    page.shapes.append(
        Shape(
            "ellipse",
            (left + 20, top - 10, left + width - 20, top + height + 10),
            colour=(170, 170, 170),
            width=0.8,
        )
    )
    page.shapes.append(
        Shape("line", (A4[0] / 2 - 18, top - 8, A4[0] / 2, top - 30), colour=(170, 170, 170), width=0.8)
    )
    page.shapes.append(
        Shape("line", (A4[0] / 2, top - 30, A4[0] / 2 + 18, top - 8), colour=(170, 170, 170), width=0.8)
    )
    for printed, canonical, fx, fy in HEAD_LAYOUT:
        px = left + fx * width - 20
        py = top + fy * height
        _p300_panel(
            page,
            rng,
            x=px,
            y=py,
            printed=printed,
            site=canonical,
            metric="P300 Rare",
            n100=False,
            sessions=sessions,
        )
    # Averages below the head.
    ay = top + height + 40
    page.text(60, ay - 14, "Averages", size=7, bold=True)
    _p300_panel(
        page,
        rng,
        x=90,
        y=ay,
        printed="AVG",
        site="Average",
        metric="P300 Rare",
        n100=False,
        sessions=sessions,
    )
    _p300_panel(
        page,
        rng,
        x=250,
        y=ay,
        printed="CF AVG",
        site="Central-frontal average",
        metric="P300 Rare",
        n100=False,
        sessions=sessions,
    )
    _p300_panel(
        page,
        rng,
        x=410,
        y=ay,
        printed="N100 CF AVG",
        site="Central-frontal average",
        metric="N100",
        n100=True,
        sessions=sessions,
    )
    page.text(
        36,
        ay + 62,
        "# = accepted trials, UV = peak amplitude (\u00b5V), MS = peak latency.",
        size=6,
        colour=(90, 90, 90),
    )
    return page


# --- WAVi typed per-site tables ------------------------------------------------------------------------------

# (title as printed, metric, unit, value maker): one table per measure type, a row per 10-20 site.
SITE_TABLES = [
    ("Peak Alpha Frequency (Hz)", "Peak Alpha Frequency", "Hz", lambda rng: f"{rng.uniform(7.6, 12.4):.1f}"),
    ("Theta/Beta Ratio", "Theta/Beta Ratio", "", lambda rng: f"{rng.uniform(0.6, 4.8):.2f}"),
    ("Relative Alpha (%)", "Relative Alpha", "%", lambda rng: f"{rng.uniform(4, 61):.1f}"),
    ("Alpha Asymmetry (Z)", "Alpha Asymmetry", "Z", lambda rng: f"{rng.uniform(-2.9, 2.9):.2f}"),
]


def wavi_sites(rng: random.Random, sessions: Sessions, *, label: str) -> VendorPage:
    """WAVi's typed per-site tables: one small `Site S1 S2 S3` table per measure type, four side by side in
    tiny print with thin gaps (a line read straight across runs four tables together), values right-aligned
    under their session, "-" where a session has no value for that site, session colours only on the
    header, and the session dates in a key line at the top."""
    page = VendorPage("wavi_sites")
    _header(
        page, "WAVi Brain Health Report \u2014 Site Measures", "Eyes closed; one table per measure", label
    )
    x = 36.0
    for index in (1, 2, 3):
        page.text(x, 66, f"S{index}: {sessions.label(index)}", size=6.5, colour=SESSION_COLOURS[index])
        page.fact("Session date", sessions.label(index), session=index)
        x += 92
    size = 5.8
    line = size * 1.42
    top = 86.0
    width = (A4[0] - 72) / len(SITE_TABLES)
    for t, (title, metric, unit, make) in enumerate(SITE_TABLES):
        left = 36.0 + t * width
        page.text(left, top, title, size=6.4, bold=True)
        # Site label, then three value columns (right edges) packed into the table's width.
        columns = [left + 46 + k * 27 for k in range(3)]
        page.text(left, top + 10, "Site", size=size, bold=True)
        for k, right in enumerate(columns, start=1):
            page.text(
                right, top + 10, f"S{k}", size=size, bold=True, colour=SESSION_COLOURS[k], align="right"
            )
        page.shapes.append(
            Shape("line", (left, top + 18, left + width - 8, top + 18), colour=(120, 120, 120))
        )
        y = top + 21
        for printed, site, _, _ in HEAD_LAYOUT:
            page.text(left, y, printed, size=size)
            for k, right in enumerate(columns, start=1):
                value = "-" if rng.random() < 0.04 else make(rng)
                if value == "-0.00":
                    value = "0.00"
                ink = page.text(right, y, value, size=size, align="right")
                page.fact(metric, value, unit=unit, site=site, session=k)
                page.value_inks.append((ink, len(page.facts) - 1))
            y += line
    page.text(
        36,
        top + 21 + 19 * line + 10,
        "- = not recorded in that session. Asymmetry Z against the age-matched norm.",
        size=6,
        colour=(90, 90, 90),
    )
    return page


# --- NeuroGuide Z table ------------------------------------------------------------------------------------


def neuroguide_z(rng: random.Random, sessions: Sessions, *, label: str, session: int = 1) -> VendorPage:
    page = VendorPage("neuroguide_z")
    _header(
        page,
        "NeuroGuide \u2014 Absolute Power Z Scores",
        f"Eyes Closed, linked ears, recorded {sessions.label(session)}",
        label,
    )
    metric = "Absolute Power Z"
    size = 6.3
    site_x, first, step = 40.0, 112.0, 47.0  # value columns: right edges
    y = 74.0
    page.text(site_x, y, "Site", size=size, bold=True)
    for i, band in enumerate(NEUROGUIDE_BANDS):
        page.text(first + i * step, y, band, size=size, bold=True, align="right")
    page.shapes.append(Shape("line", (36, y + 10, A4[0] - 36, y + 10), colour=(100, 100, 100)))
    y += 14
    for site in NEUROGUIDE_SITES:
        page.text(site_x, y, site, size=size)
        for i, band in enumerate(NEUROGUIDE_BANDS):
            value = f"{sessions.rng(rng, session, f'{site}|{band}').uniform(-3.2, 3.2):.2f}"
            if value == "-0.00":
                value = "0.00"
            page.text(first + i * step, y, value, size=size, align="right")
            page.fact(metric, value, unit="Z", site=site, band=band, session=session)
        y += 10.5
    page.text(
        36,
        y + 8,
        "Z = deviation from the age-matched norm in standard deviations (norm 0, |Z| > 1.96 flagged).",
        size=6,
        colour=(90, 90, 90),
    )
    return page


# --- generic rows -------------------------------------------------------------------------------------------


GENERIC_TESTS = [
    ("Trail Making Test A", "sec", (20, 80), "38-64"),
    ("Trail Making Test B", "sec", (45, 140), "60-120"),
    ("Digit Span Forward", "", (4, 9), "6-8"),
    ("Digit Span Backward", "", (2, 8), "4-6"),
    ("Stroop Interference", "", (-12, 12), "-8-8"),
    ("Verbal Fluency FAS", "words", (20, 60), "30-50"),
]


def generic_rows(rng: random.Random, sessions: Sessions, *, label: str) -> VendorPage:
    page = VendorPage("generic_rows")
    _header(
        page, "Neuropsychological Test Summary", "Scores per session; normal range in the last column", label
    )
    y = 74.0
    page.text(36, y, "Test", size=7, bold=True)
    for index in (1, 2, 3):
        page.text(200 + (index - 1) * 70, y, f"Session {index}", size=7, bold=True)
    page.text(420, y, "Normal", size=7, bold=True)
    y += 12
    for name, unit, (low, high), normal in GENERIC_TESTS:
        page.text(36, y, name, size=7)
        for index in (1, 2, 3):
            value = str(sessions.rng(rng, index, name).randint(low, high))
            page.text(200 + (index - 1) * 70, y, f"{value} {unit}".strip(), size=7)
            page.fact(name, value, unit=unit, session=index, target=f"{normal} {unit}".strip())
        page.text(420, y, f"{normal} {unit}".strip(), size=7)
        y += 11
    return page


PAGE_MAKERS = {
    "wavi_summary": wavi_summary,
    "wavi_p300": wavi_p300,
    "wavi_sites": wavi_sites,
    "neuroguide_z": neuroguide_z,
    "generic_rows": generic_rows,
}


# --- drawing ------------------------------------------------------------------------------------------------


def render_bitmap(page: VendorPage, *, dpi: int = 200) -> Image.Image:
    """The page as a vendor's exporter would rasterise it: antialiased text on white, no text layer."""
    scale = dpi / 72
    image = Image.new("RGB", (round(A4[0] * scale), round(A4[1] * scale)), "white")
    draw = ImageDraw.Draw(image)
    for shape in page.shapes:
        box = [round(v * scale) for v in shape.box]
        width = max(1, round(shape.width * scale))
        if shape.kind == "rect":
            draw.rectangle(box, outline=shape.colour, width=width)
        elif shape.kind == "ellipse":
            draw.ellipse(box, outline=shape.colour, width=width)
        else:
            draw.line(box, fill=shape.colour, width=width)
    anchors = {"left": "la", "right": "ra", "center": "ma"}
    for ink in page.inks:
        draw.text(
            (ink.x * scale, ink.y * scale),
            ink.text,
            fill=ink.colour,
            font=font(ink.size * scale, bold=ink.bold),
            anchor=anchors[ink.align],
        )
    return image


def _draw_text_layer(pdf: FPDF, page: VendorPage) -> None:
    for shape in page.shapes:
        pdf.set_draw_color(*shape.colour)
        pdf.set_line_width(shape.width)
        x0, y0, x1, y1 = shape.box
        if shape.kind == "rect":
            pdf.rect(x0, y0, x1 - x0, y1 - y0)
        elif shape.kind == "ellipse":
            pdf.ellipse(x0, y0, x1 - x0, y1 - y0)
        else:
            pdf.line(x0, y0, x1, y1)
    for ink in page.inks:
        pdf.set_font("DejaVu", style="B" if ink.bold else "", size=ink.size)
        pdf.set_text_color(*ink.colour)
        width = pdf.get_string_width(ink.text)
        x = ink.x - width if ink.align == "right" else ink.x - width / 2 if ink.align == "center" else ink.x
        # Ink.y is the top of the line box; PDF text sits on its baseline (DejaVu ascent is 0.93 em).
        pdf.text(x, ink.y + 0.93 * ink.size, ink.text)


class VendorReport(TypedDict):
    page_count: int
    pages: list[dict]  # per page: number, kind, mode ("image"/"text")
    facts: list[TrueFact]
    faint: list[TrueFact]  # facts printed too pale for a layout reader (`faint`)


def make_vendor_pdf(
    path: Path | str,
    *,
    pages: list[tuple[str, str]] | None = None,
    seed: int = 10,
    label: str = "SYNTH-V01",
    dpi: int = 200,
    jpeg_quality: int | None = 88,
    sessions: Sessions | None = None,
    faint: int = 0,
) -> VendorReport:
    """Write a vendor-like report; `pages` lists (kind, "image" | "text"). Returns the facts it printed.
    `sessions`: the three sessions it prints (e.g. three visits of a `patient_history`); else made up.

    Image pages are rasterised at `dpi` and embedded as JPEG (as vendor exporters do, with its artefacts
    around small coloured print) or PNG when `jpeg_quality` is None, with no text layer at all.

    `faint`: on each image page, that many printed values (chosen by the seed) are printed so pale that no
    layout reader sees them as ink, as a worn or light-toner print is; a person (or a vision model) still
    can, and the returned facts keep them. `report["faint"]` lists them.
    """
    pages = pages or [
        ("wavi_summary", "image"),
        ("wavi_p300", "image"),
        ("neuroguide_z", "image"),
        ("generic_rows", "text"),
    ]
    rng = random.Random(seed)
    made = make_sessions(rng)  # drawn either way, so a seed prints the same numbers as it always did
    sessions = sessions or made
    pdf = FPDF(unit="pt", format=A4)
    pdf.set_auto_page_break(auto=False)
    pdf.add_font("DejaVu", "", str(FONT))
    pdf.add_font("DejaVu", "B", str(FONT_BOLD))
    report = VendorReport(page_count=len(pages), pages=[], facts=[], faint=[])
    for number, (kind, mode) in enumerate(pages, start=1):
        page = PAGE_MAKERS[kind](rng, sessions, label=label)
        pdf.add_page()
        if mode == "image":
            for ink, index in random.Random(seed * 1000 + number).sample(
                page.value_inks, min(faint, len(page.value_inks))
            ):
                ink.colour = FAINT
                report["faint"].append(TrueFact(**{**page.facts[index], "page": number}))
            bitmap = render_bitmap(page, dpi=dpi)
            buffer = io.BytesIO()
            if jpeg_quality is None:
                bitmap.save(buffer, format="PNG")
            else:
                bitmap.save(buffer, format="JPEG", quality=jpeg_quality)
            buffer.seek(0)
            pdf.image(buffer, x=0, y=0, w=A4[0], h=A4[1])
        else:
            _draw_text_layer(pdf, page)
        for fact in page.facts:
            report["facts"].append(TrueFact(**{**fact, "page": number}))
        report["pages"].append({"number": number, "kind": kind, "mode": mode})
    Path(path).write_bytes(bytes(pdf.output()))
    return report
