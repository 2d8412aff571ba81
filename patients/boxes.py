"""Where the text of a page sits on its stored page image: word boxes from the PDF text layer (pypdfium2) and
OCR boxes of any bitmap on the page (rapidocr), in the image's pixels, grouped into lines. De-identification
paints identifying boxes out before a page image may leave the machine."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from PIL import Image

from patients import ingest
from patients.models import Report


class TextBox(NamedTuple):
    text: str
    left: float
    top: float
    right: float
    bottom: float


class CannotLocate(Exception):
    """Some text on the page cannot be located, so the page cannot be vouched for."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def page_lines(report: Report, number: int, image_path: Path) -> list[list[TextBox]]:
    """Every text box on page `number` (1-based) in lines, in the pixel space of `image_path`."""
    if report.kind != Report.Kind.PDF:
        raise CannotLocate("a text upload has no page images")
    meta = json.loads((report.folder / "pages.json").read_text(encoding="utf-8"))
    record = next((p for p in meta["pages"] if p["page"] == number), None)
    if record is None:
        raise CannotLocate(f"page {number} was not read")
    # Text drawn inside a bitmap has no text layer; only OCR of the image finds where it is.
    bitmaps = record.get("image_coverage", 1.0) > 0 or record.get("ocr_ran")
    with Image.open(image_path) as image:
        size = image.size
        pixels = image.convert("RGB") if bitmaps else None
    boxes = text_layer_boxes(report.original_path, number, size)
    if pixels is not None:
        if not settings.REPORT_OCR_ENABLED:
            raise CannotLocate("the page has images and OCR is off, so the text in them cannot be located")
        boxes += ocr_boxes(pixels)
    return to_lines(boxes)


def text_layer_boxes(pdf_path: Path, number: int, size: tuple[int, int]) -> list[TextBox]:
    """One box per word of the page's text layer, scaled to an image of `size` pixels."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf_path)
    try:
        page = document[number - 1]
        width, height = page.get_size()
        sx, sy = size[0] / width, size[1] / height
        textpage = page.get_textpage()
        words: list[TextBox] = []
        chars: list[str] = []
        box: list[float] = []
        for i in range(textpage.count_chars()):
            ch = textpage.get_text_range(i, 1)
            if not ch or ch.isspace():
                if chars:
                    words.append(_word(chars, box, sx, sy, height))
                chars, box = [], []
                continue
            left, bottom, right, top = textpage.get_charbox(i)
            box = [min(box[0], left), min(box[1], bottom), max(box[2], right), max(box[3], top)] if box else [
                left, bottom, right, top
            ]  # fmt: skip
            chars.append(ch)
        if chars:
            words.append(_word(chars, box, sx, sy, height))
        textpage.close()
        page.close()
    finally:
        document.close()
    return words


def _word(chars: list[str], box: list[float], sx: float, sy: float, height: float) -> TextBox:
    left, bottom, right, top = box
    return TextBox("".join(chars), left * sx, (height - top) * sy, right * sx, (height - bottom) * sy)


def ocr_boxes(image: Image.Image) -> list[TextBox]:
    import numpy as np

    result, _ = ingest.ocr_engine()(np.asarray(image))
    out = []
    for points, text, _score in result or []:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        if str(text).strip():
            out.append(TextBox(str(text).strip(), min(xs), min(ys), max(xs), max(ys)))
    return out


def to_lines(boxes: list[TextBox]) -> list[list[TextBox]]:
    """Boxes grouped into lines by vertical centre, each line left to right (as ingest.boxes_to_lines)."""
    if not boxes:
        return []
    typical = statistics.median(b.bottom - b.top for b in boxes) or 1.0
    lines: list[list[TextBox]] = []
    for box in sorted(boxes, key=lambda b: (b.top + b.bottom) / 2):
        centre = (box.top + box.bottom) / 2
        if lines and abs(centre - statistics.fmean((b.top + b.bottom) / 2 for b in lines[-1])) <= typical / 2:
            lines[-1].append(box)
        else:
            lines.append([box])
    return [sorted(line, key=lambda b: b.left) for line in lines]
