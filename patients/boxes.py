"""Where the text of a page sits on its stored page image, for painting identifiers out before the image may
leave the machine: the word boxes of patients/layout.py (the PDF text layer, and OCR of any bitmap on the
page), scaled to the image's pixels and grouped into lines, each source on its own lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from PIL import Image

from patients import ingest, layout
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
    """Every word on page `number` (1-based) in lines, in the pixel space of `image_path`."""
    if report.kind != Report.Kind.PDF:
        raise CannotLocate("a text upload has no page images")
    meta = json.loads((report.folder / "pages.json").read_text(encoding="utf-8"))
    record = next((p for p in meta["pages"] if p["page"] == number), None)
    if record is None:
        raise CannotLocate(f"page {number} was not read")
    # Text drawn inside a bitmap has no text layer; only OCR of the page finds where it is.
    bitmaps = record.get("image_coverage", 1.0) > 0 or record.get("ocr_ran")
    if bitmaps and not settings.REPORT_OCR_ENABLED:
        raise CannotLocate("the page has images and OCR is off, so the text in them cannot be located")
    with Image.open(image_path) as image:
        size = image.size
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(report.original_path)
    try:
        page = document[number - 1]
        try:
            layouts = [layout.read_text_layer(page, number=number)]
            if bitmaps:
                layouts.append(layout.read_ocr(page, number=number, engine=ingest.ocr_engine()))
        finally:
            page.close()
    finally:
        document.close()
    return layout_lines(layouts, size)


def layout_lines(layouts: list[layout.PageLayout], size: tuple[int, int]) -> list[list[TextBox]]:
    """The layouts' word boxes in the pixel space of an image of the page `size` pixels large, in lines
    (each layout on its own lines)."""
    lines: list[list[TextBox]] = []
    for read in layouts:
        sx, sy = size[0] / read.width, size[1] / read.height
        for row in read.rows():
            lines.append([TextBox(b.text, b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy) for b in row.boxes])
    return lines
