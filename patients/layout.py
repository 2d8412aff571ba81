"""Reading a page by layout: every piece of printed text as a box with position, confidence and colour.

Vendor pages put their numbers in dense tables and tiny per-electrode panels; read line by line, the OCR text
runs neighbouring cells together (`11.5352` for "11.5 352"), loses range dashes and "-" placeholders at low
resolution, and forgets colours — and colour is the only thing telling sessions apart on some pages. So an
image page is read like this:

1. render it twice from the PDF: coarse (`DETECT_DPI`) for rapidocr's text detector, which only has to find
   where text is, and fine (`READ_DPI`, 300) for everything else, so dashes and decimal points survive;
2. group the detected regions into line bands, and within each band cut the ink itself into words at gaps
   wider than a word space (measured against the band's own print size), so two cells never share a box
   even when the detector drew one box around both; ink the detector missed inside a band (a lone "-", a
   "#") is picked up the same way;
3. recognise each word from the fine render (rapidocr's recogniser, in batches) and sample its colour from
   the glyph pixels (the dominant non-background colour, not the antialiased rim).

A text-layer page gives the same boxes from pypdfium2's character boxes and fill colours, so vendor readers
work on both alike. Positions are PDF points from the page's top-left corner, so a box can be highlighted
on any render. `PageLayout.rows()` rebuilds table rows by vertical centre; readers do the rest.
"""

from __future__ import annotations

import ctypes
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

OCR = "OCR"
TEXT_LAYER = "text layer"
DETECT_DPI = 100
# The detector's input is never larger than this (an A3 page at DETECT_DPI is 1.9 million pixels): a poster
# page is detected coarser, or its arrays alone would exhaust the ingester's memory.
DETECT_MAX_PIXELS = 2_500_000
READ_DPI = 300
# A pixel is ink when its darkest channel is under this (light grey rules and head outlines are not).
INK_LEVEL = 150
# Word gap, in units of the band's print height (cap height). DejaVu/Arial-like fonts leave at most ~0.3 of
# the cap height between glyphs of one number and at least ~0.45 across a space.
WORD_GAP = 0.47


@dataclass
class Box:
    """One word as printed: its text, where it is (points, top-left origin), how sure, and its colour."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    colour: str | None = None  # "#rrggbb" of the glyphs, None when unknown
    source: str = OCR

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    def as_list(self) -> list[float]:
        return [round(self.x0, 1), round(self.y0, 1), round(self.x1, 1), round(self.y1, 1)]

    def rgb(self) -> tuple[int, int, int] | None:
        if not self.colour:
            return None
        return tuple(int(self.colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@dataclass
class Row:
    """Boxes sharing a vertical centre, left to right."""

    boxes: list[Box]

    @property
    def cy(self) -> float:
        return statistics.fmean(box.cy for box in self.boxes)

    @property
    def text(self) -> str:
        return " ".join(box.text for box in self.boxes)


@dataclass
class PageLayout:
    page: int
    source: str  # OCR or TEXT_LAYER
    width: float  # points
    height: float
    boxes: list[Box] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # render / detect / read / layout

    def rows(self, boxes: list[Box] | None = None) -> list[Row]:
        return group_rows(self.boxes if boxes is None else boxes)

    def text(self) -> str:
        """The page as lines, cells three spaces apart where a column gap separates them."""
        lines = []
        for row in self.rows():
            parts = [row.boxes[0].text]
            for previous, current in zip(row.boxes, row.boxes[1:], strict=False):
                gap = current.x0 - previous.x1
                parts.append("   " if gap > 0.9 * max(previous.height, current.height) else " ")
                parts.append(current.text)
            lines.append("".join(parts))
        return "\n".join(lines)

    def within(self, x0: float, y0: float, x1: float, y1: float) -> list[Box]:
        return [box for box in self.boxes if x0 <= box.cx <= x1 and y0 <= box.cy <= y1]

    def mean_confidence(self) -> float | None:
        if not self.boxes:
            return None
        return round(statistics.fmean(box.score for box in self.boxes), 4)


def group_rows(boxes: list[Box]) -> list[Row]:
    """Rows by vertical centre: a box joins a row when its centre is within half a typical box height of
    the row's centre. Each row is sorted left to right."""
    if not boxes:
        return []
    typical = statistics.median(box.height for box in boxes) or 1.0
    rows: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: b.cy):
        if rows and abs(box.cy - statistics.fmean(b.cy for b in rows[-1])) <= typical / 2:
            rows[-1].append(box)
        else:
            rows.append([box])
    return [Row(sorted(row, key=lambda b: b.x0)) for row in rows]


def is_merged_token(text: str) -> bool:
    """A token that still holds two values ("11.5352", "10.7.348"); a range ("9.0-11.0") is one value."""
    for part in re.split(r"(?<=\d)[-\u2013\u2014](?=\d)", text):
        if part.count(".") > 1 or re.fullmatch(r"-?\d+\.\d{3,}", part):
            return True
    return False


# --- text layer ---------------------------------------------------------------------------------------------


def read_text_layer(page: pdfium.PdfPage, *, number: int) -> PageLayout:
    """Words from the PDF's own text, with char boxes and fill colours, as boxes like OCR's."""
    started = time.perf_counter()
    width, height = page.get_size()
    layout = PageLayout(page=number, source=TEXT_LAYER, width=width, height=height)
    textpage = page.get_textpage()
    try:
        count = textpage.count_chars()
        word: list[tuple[str, float, float, float, float, str | None]] = []

        def flush() -> None:
            if word:
                text = "".join(ch[0] for ch in word)
                layout.boxes.append(
                    Box(
                        text=text,
                        x0=min(ch[1] for ch in word),
                        y0=min(ch[2] for ch in word),
                        x1=max(ch[3] for ch in word),
                        y1=max(ch[4] for ch in word),
                        score=1.0,
                        colour=statistics.mode(ch[5] for ch in word),
                        source=TEXT_LAYER,
                    )
                )
                word.clear()

        r, g, b, a = (ctypes.c_uint() for _ in range(4))
        for index in range(count):
            char = textpage.get_text_range(index, 1)
            if not char or char.isspace():
                flush()
                continue
            # Loose boxes span the glyph's advance, so the gap between two glyphs of a word is ~0 and a
            # space (or a column gap) is what separates words.
            left, _, right, _ = textpage.get_charbox(index, loose=True)
            _, bottom, _, top = textpage.get_charbox(index)
            size = pdfium_c.FPDFText_GetFontSize(textpage.raw, index) or (top - bottom) or 1.0
            colour = None
            if pdfium_c.FPDFText_GetFillColor(textpage.raw, index, r, g, b, a):
                colour = f"#{r.value:02x}{g.value:02x}{b.value:02x}"
            x0, y0, x1, y1 = left, height - top, right, height - bottom
            if word:
                last = word[-1]
                same_line = abs((y0 + y1) / 2 - (last[2] + last[4]) / 2) < 0.5 * size
                if not same_line or x0 - last[3] > 0.12 * size:
                    flush()
            word.append((char, x0, y0, x1, y1, colour))
        flush()
    finally:
        textpage.close()
    layout.seconds = {"layout": round(time.perf_counter() - started, 3)}
    return layout


# --- OCR ----------------------------------------------------------------------------------------------------

# The recogniser knows thousands of CJK characters; vendor pages print Latin text, digits and a few
# symbols, so decoding is restricted to those and a smudged digit cannot come back as a Chinese glyph.
ALLOWED = set(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?%#&*+-=/<>()[]'\"_|~"
    "\u00b0\u00b1\u00b5\u03bc\u2013\u2014\u2212\u2264\u2265\u00b2\u00b3\u00b7"
)
REC_HEIGHT = 48
# Recognition costs in proportion to the pixels it is given (~55 µs of one core per column of a 48-px strip),
# so what is pasted around each word is kept small. White space between words in one strip, in strip
# heights: wider than any gap inside a word, so every recognised character lands in its word's slot
# (0.3 before; 0.1 still recovered every fact of the synthetic pages).
SLOT_GAP = 0.2
# Recognition pixels per strip; a longer region is recognised in several strips. 320 instead of 1600 halved
# recognition CPU on the synthetic vendor pages (benchmarks/facts_bench.py) at the same recovery (batches
# of long strips padded most); below ~200 a word no longer fits and recovery collapses.
STRIP_MAX_WIDTH = 320
# Ink kept around a word, in line heights: above and below (which sets the print size the recogniser sees:
# 0.3 already misread large titles, 0.4 lost a whole page), and to each side (0.2 before; 0.05 still
# recovered every fact).
LINE_MARGIN = 0.2
SIDE_MARGIN = 0.1
REC_BATCH = (
    4  # strips per recogniser call (sorted by width, so little padding); 2 and 8 were slower, 16 more so
)


@dataclass
class _Word:
    x0: int
    y0: int
    x1: int
    y1: int
    labels: list[int]  # connected-component ids of its glyphs
    text: str = ""
    score: float = 0.0
    lost: bool = False  # found beside the detector's regions, not inside one


def _ink(image: np.ndarray) -> np.ndarray:
    # Channel by channel: numpy's min over the last axis of an HxWx3 array is ~15x slower.
    return np.minimum(np.minimum(image[:, :, 0], image[:, :, 1]), image[:, :, 2]) < INK_LEVEL


def _words(stats: np.ndarray, centroids: np.ndarray, ids: list[int]) -> list[_Word]:
    """Glyph components joined into words: two glyphs on one line belong together when the gap between them
    is under WORD_GAP of their print height. The height is the smaller of two full glyphs (so a descender
    does not widen the allowance) or the full one beside a dot, comma or dash."""
    order = sorted(ids, key=lambda i: stats[i, 0])
    parent = {i: i for i in order}
    ordered = np.asarray(order, dtype=np.int64)
    left = stats[ordered, 0].astype(np.int64)
    top = stats[ordered, 1].astype(np.int64)
    tall = stats[ordered, 3].astype(np.int64)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Stop looking right once past any possible word gap (the tallest glyph's), not the pair's own: a
    # dot on another line must not end the search before this glyph's neighbour is reached.
    reach = WORD_GAP * max((int(stats[i, 3]) for i in order), default=0)
    for n, a in enumerate(order):
        ax0, ay0, aw, ah = (int(v) for v in stats[a, :4])
        ax1 = ax0 + aw
        # The glyphs within reach to the right, less those too far above or below to join in any case
        # below (no case joins two glyphs whose vertical gap exceeds half the taller one's height).
        end = int(np.searchsorted(left, ax1 + reach, side="right"))
        apart = np.maximum(top[n + 1 : end] - (ay0 + ah), ay0 - (top[n + 1 : end] + tall[n + 1 : end]))
        near = ordered[n + 1 : end][apart <= 0.5 * np.maximum(tall[n + 1 : end], ah)]
        for b in near.tolist():
            bx0, by0, _, bh = (int(v) for v in stats[b, :4])
            small, big = (a, b) if ah < bh else (b, a)
            overlap_x = min(ax1, bx0 + int(stats[b, 2])) - bx0
            if overlap_x > 0 and stats[small, 3] < 0.5 * stats[big, 3]:
                # A dot over its stem (i, j), an accent, a part of % or ÷: stacked, so one glyph.
                gap_y = max(
                    stats[small, 1] - (stats[big, 1] + stats[big, 3]),
                    stats[big, 1] - (stats[small, 1] + stats[small, 3]),
                )
                if gap_y <= 0.5 * stats[big, 3]:
                    parent[find(b)] = find(a)
                continue
            if stats[small, 3] >= 0.5 * stats[big, 3]:
                height = min(ah, bh)
                same_line = min(ay0 + ah, by0 + bh) - max(ay0, by0) >= 0.5 * height
            else:
                height = stats[big, 3]
                cy = centroids[small, 1]
                same_line = stats[big, 1] - 0.15 * height <= cy <= stats[big, 1] + 1.15 * height
            if same_line and bx0 - ax1 <= WORD_GAP * height:
                parent[find(b)] = find(a)
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(find(i), []).append(i)
    words = []
    for members in groups.values():
        x0 = int(min(stats[i, 0] for i in members))
        y0 = int(min(stats[i, 1] for i in members))
        x1 = int(max(stats[i, 0] + stats[i, 2] for i in members))
        y1 = int(max(stats[i, 1] + stats[i, 3] for i in members))
        words.append(_Word(x0, y0, x1, y1, members))
    return words


def _word_lines(words: list[_Word]) -> list[list[_Word]]:
    """Words grouped into printed lines (vertical overlap with the line's full-height words)."""
    lines: list[list[_Word]] = []
    spans: list[list[int]] = []
    for word in sorted(words, key=lambda w: (w.y0 + w.y1) / 2):
        cy = (word.y0 + word.y1) / 2
        for line, span in zip(lines, spans, strict=True):
            if span[0] <= cy <= span[1]:
                line.append(word)
                break
        else:
            lines.append([word])
            spans.append([word.y0, word.y1])
    return [sorted(line, key=lambda w: w.x0) for line in lines]


def _strips(words: list[_Word], fine: np.ndarray) -> list[tuple[np.ndarray, list[tuple[int, int, _Word]]]]:
    """Words of one region pasted side by side, normalised to REC_HEIGHT, with their slots (x ranges)."""
    height = max(w.y1 for w in words) - min(w.y0 for w in words)
    top = min(w.y0 for w in words)
    margin = max(2, int(LINE_MARGIN * height))
    side = max(2, int(SIDE_MARGIN * height))
    full_h, full_w = fine.shape[:2]
    y0, y1 = max(0, top - margin), min(full_h, top + height + margin)
    scale = REC_HEIGHT / (y1 - y0)
    gap = int(SLOT_GAP * REC_HEIGHT)
    out = []
    pieces: list[np.ndarray] = []
    slots: list[tuple[int, int, _Word]] = []
    cursor = gap // 2
    for word in words:
        x0, x1 = max(0, word.x0 - side), min(full_w, word.x1 + side)
        crop = fine[y0:y1, x0:x1]
        width = max(1, round((x1 - x0) * scale))
        import cv2

        piece = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_AREA)
        if pieces and cursor + width > STRIP_MAX_WIDTH:
            out.append((_paste(pieces, slots, cursor), slots))
            pieces, slots, cursor = [], [], gap // 2
        pieces.append(piece)
        slots.append((cursor, cursor + width, word))
        cursor += width + gap
    if pieces:
        out.append((_paste(pieces, slots, cursor), slots))
    return out


def _paste(pieces: list[np.ndarray], slots: list[tuple[int, int, _Word]], width: int) -> np.ndarray:
    strip = np.full((REC_HEIGHT, width, 3), 255, dtype=np.uint8)
    for piece, (x0, x1, _) in zip(pieces, slots, strict=True):
        strip[:, x0:x1] = piece
    return strip


def _recognise(engine: Any, strips: list[tuple[np.ndarray, list[tuple[int, int, _Word]]]]) -> None:
    """Recognise strips in batches of similar width and give each word the characters over its slot."""
    recogniser = engine.text_rec
    characters = recogniser.postprocess_op.character
    allowed = np.array([0] + [i for i, ch in enumerate(characters) if ch in ALLOWED and i > 0])
    order = sorted(range(len(strips)), key=lambda i: strips[i][0].shape[1])
    batch_size = REC_BATCH
    for start in range(0, len(order), batch_size):
        batch = [strips[i] for i in order[start : start + batch_size]]
        width = max(strip.shape[1] for strip, _ in batch)
        width = (width + 7) // 8 * 8
        tensor = np.zeros((len(batch), 3, REC_HEIGHT, width), dtype=np.float32)
        for n, (strip, _) in enumerate(batch):
            tensor[n, :, :, : strip.shape[1]] = strip.transpose(2, 0, 1) / 127.5 - 1.0
        preds = recogniser.session(tensor)[0][:, :, allowed]
        best = preds.argmax(axis=2)
        probs = preds.max(axis=2)
        step = width / preds.shape[1]
        for n, (_, slots) in enumerate(batch):
            chars: dict[int, list[tuple[str, float]]] = {}
            previous = -1
            for t, index in enumerate(best[n]):
                if index != previous and index != 0:
                    x = (t + 0.5) * step
                    for k, (s0, s1, _) in enumerate(slots):
                        if s0 - SLOT_GAP * REC_HEIGHT / 2 <= x <= s1 + SLOT_GAP * REC_HEIGHT / 2:
                            chars.setdefault(k, []).append((characters[allowed[index]], float(probs[n, t])))
                            break
                previous = index
            for k, (_, _, word) in enumerate(slots):
                got = chars.get(k, [])
                word.text = "".join(ch for ch, _ in got).strip()
                word.score = round(statistics.fmean(p for _, p in got), 4) if got else 0.0


def _colour(pixels: np.ndarray) -> str | None:
    """The glyphs' own colour: the median of the strongest half of their pixels (not the antialiased rim)."""
    if len(pixels) == 0:
        return None
    flat = pixels.astype(np.int16)
    low = flat.min(axis=1)
    strength = (255 - low) + (flat.max(axis=1) - low)
    core = flat[strength >= _percentile_floor(strength, 60)]
    r, g, b = (int(v) for v in np.median(core, axis=0))
    return f"#{r:02x}{g:02x}{b:02x}"


def _percentile_floor(values: np.ndarray, q: float) -> int:
    """The least integer v with `values >= v` selecting exactly what `values >= np.percentile(values, q)`
    selects, for integer values: the q-th percentile interpolates between two neighbouring order
    statistics, and no value lies strictly between them. One partition instead of np.percentile's
    general machinery (a third of the colour sampling's time)."""
    rank = q / 100 * (len(values) - 1)
    below = int(rank)
    if below == rank or below + 1 >= len(values):
        return int(np.partition(values, below)[below])
    return int(np.partition(values, [below, below + 1])[below + 1])


def render_rgb(page: pdfium.PdfPage, dpi: float) -> np.ndarray:
    """The page as an H x W x 3 RGB array: PDFium renders in RGB order straight into numpy (the same pixels
    as through PIL's `convert("RGB")`, 20-40 ms less for an A4 page at 300 dpi), copied out of the bitmap,
    whose buffer is freed with it."""
    return np.array(page.render(scale=dpi / 72, rev_byteorder=True).to_numpy())


def read_ocr(page: pdfium.PdfPage, *, number: int, engine: Any, read_dpi: float = READ_DPI) -> PageLayout:
    """OCR one page into word boxes (see the module docstring). A page too large for the pixel cap comes
    with a lower `read_dpi`; detection then runs on that render as it is, never on an upscaled one."""
    import cv2

    timings: dict[str, float] = {}
    started = time.perf_counter()
    width, height = page.get_size()
    detect_dpi = min(DETECT_DPI, read_dpi, 72 * math.sqrt(DETECT_MAX_PIXELS / max(width * height, 1.0)))
    fine = render_rgb(page, read_dpi)
    coarse = np.ascontiguousarray(
        cv2.resize(
            fine, None, fx=detect_dpi / read_dpi, fy=detect_dpi / read_dpi, interpolation=cv2.INTER_AREA
        )
    )
    timings["render"] = time.perf_counter() - started

    started = time.perf_counter()
    det, _ = engine.text_det(coarse)
    timings["detect"] = time.perf_counter() - started

    started = time.perf_counter()
    factor = read_dpi / detect_dpi
    regions = []
    for quad in det if det is not None else []:
        xs, ys = quad[:, 0] * factor, quad[:, 1] * factor
        regions.append((xs.min(), ys.min(), xs.max(), ys.max()))
    _, labels, stats, centroids = cv2.connectedComponentsWithStats(
        _ink(fine).astype(np.uint8), connectivity=8
    )
    # Glyph-sized components only: frames, rules and head outlines are not text.
    region_heights = [y1 - y0 for _, y0, _, y1 in regions] or [30]
    line_height = statistics.median(region_heights)
    glyph = (stats[:, 3] < 2.5 * line_height) & (stats[:, 2] < 4 * line_height) & (stats[:, 4] >= 2)
    glyph[0] = False
    # Each glyph goes to the detected region whose middle is nearest its own; the detector's regions
    # overlap their neighbours (they are drawn generously), so "the first region it falls in" would cut a
    # number in two.
    owner = _region_owners(centroids, glyph, regions)
    # Glyphs the detector left out (a lone "-", "<0", the first digit of a number) join the line they sit
    # on, so a word is cut from all of its glyphs; a word made only of such glyphs must be read surely.
    lost = _lost_glyphs(stats, centroids, glyph & (owner < 0), regions)
    lost_ids = set(np.flatnonzero(lost >= 0).tolist())
    text_ids = np.flatnonzero((owner >= 0) | (lost >= 0)).tolist()
    words_by_region = []
    dashes: list[_Word] = []
    for line in _word_lines(_words(stats, centroids, text_ids)):
        words = []
        cap = float(np.percentile([w.y1 - w.y0 for w in line], 75))
        for word in line:
            word.lost = set(word.labels) <= lost_ids
            if _is_dash(word, cap):
                word.text, word.score = "-", 0.9
                dashes.append(word)
            else:
                words.append(word)
        if words:
            words_by_region.append(words)
    strips = [strip for words in words_by_region for strip in _strips(words, fine)]
    timings["layout"] = time.perf_counter() - started

    started = time.perf_counter()
    _recognise(engine, strips)
    timings["read"] = time.perf_counter() - started

    started = time.perf_counter()
    scale = 72 / read_dpi
    layout = PageLayout(page=number, source=OCR, width=width, height=height)
    member = np.zeros(len(stats), dtype=bool)
    for word in [w for words in words_by_region for w in words] + dashes:
        if not word.text or word.score < (0.75 if word.lost else 0.3):
            continue
        pixels = _pixels(fine, labels, word, member)
        layout.boxes.append(
            Box(
                text=word.text,
                x0=word.x0 * scale,
                y0=word.y0 * scale,
                x1=word.x1 * scale,
                y1=word.y1 * scale,
                score=word.score,
                colour=_colour(pixels),
                source=OCR,
            )
        )
    timings["layout"] += time.perf_counter() - started
    layout.seconds = {key: round(value, 3) for key, value in timings.items()}
    return layout


def _region_owners(
    centroids: np.ndarray, glyph: np.ndarray, regions: list[tuple[float, float, float, float]]
) -> np.ndarray:
    """For each glyph, the region (padded by 0.15 of its height) holding its centre whose middle line is
    nearest; -1 for none. On ties the first region wins."""
    owner = np.full(len(centroids), -1)
    ids = np.flatnonzero(glyph)
    if not regions or not len(ids):
        return owner
    box = np.asarray(regions, dtype=np.float64)  # R x 4
    pad = 0.15 * (box[:, 3] - box[:, 1])
    left, right, top, bottom = box[:, 0] - pad, box[:, 2] + pad, box[:, 1] - pad, box[:, 3] + pad
    middle = (box[:, 1] + box[:, 3]) / 2
    for start in range(0, len(ids), 1024):  # glyphs x regions at a time, bounded for a crowded page
        chunk = ids[start : start + 1024]
        x, y = centroids[chunk, 0][:, None], centroids[chunk, 1][:, None]
        inside = (x >= left) & (x <= right) & (y >= top) & (y <= bottom)
        distance = np.where(inside, np.abs(y - middle), np.inf)
        nearest = distance.argmin(axis=1)
        found = np.isfinite(distance[np.arange(len(chunk)), nearest])
        owner[chunk[found]] = nearest[found]
    return owner


def _pixels(fine: np.ndarray, labels: np.ndarray, word: _Word, member: np.ndarray) -> np.ndarray:
    """The word's glyph pixels, row by row. `member` is an all-False flag per component, lent for the
    look-up (a table look-up per pixel instead of `np.isin`'s sort) and handed back all False."""
    window = labels[word.y0 : word.y1, word.x0 : word.x1]
    member[word.labels] = True
    try:
        return fine[word.y0 : word.y1, word.x0 : word.x1][member[window]]
    finally:
        member[word.labels] = False


def _lost_glyphs(
    stats: np.ndarray,
    centroids: np.ndarray,
    loose: np.ndarray,
    regions: list[tuple[float, float, float, float]],
) -> np.ndarray:
    """For each glyph outside every detected region, the region whose line it sits on (-1 for none).

    A glyph counts only when it sits in the middle band of a detected line and is no taller than its text,
    so frame edges, ticks and head outlines elsewhere on the page are not read as values."""
    found = np.full(len(stats), -1)
    if not regions:
        return found
    ys = np.array([[y0, y1] for _, y0, _, y1 in regions])
    middles = ys.mean(axis=1)
    heights = ys[:, 1] - ys[:, 0]
    for i in np.flatnonzero(loose).tolist():
        distance = np.abs(middles - centroids[i, 1]) / heights
        r = int(np.argmin(distance))
        if distance[r] <= 0.3 and stats[i, 3] <= 0.8 * heights[r]:
            found[i] = r
    return found


def _is_dash(word: _Word, cap: float) -> bool:
    """A lone flat bar at mid-height of its line: the "-" a table prints for "no value"."""
    if len(word.labels) != 1:
        return False
    width, height = word.x1 - word.x0, word.y1 - word.y0
    return height <= 0.3 * cap and 0.3 * cap <= width <= 1.6 * cap
