"""The stored text's shape, OCR line grouping, and when a page is OCR'd — without running OCR."""

from __future__ import annotations

import io

import pypdfium2 as pdfium
from fpdf import FPDF
from PIL import Image

from patients import ingest
from patients.layout import Box, PageLayout

OPTIONS = ingest.IngestOptions(
    max_pages=10, render_dpi=72, ocr_enabled=True, ocr_min_chars=200, ocr_image_area=0.3
)


def test_ocr_boxes_become_rows_read_left_to_right():
    def box(x0: float, y0: float, x1: float, y1: float, text: str) -> Box:
        return Box(text, x0, y0, x1, y1, 0.99)

    page = PageLayout(page=1, source="OCR", width=600, height=800)
    page.boxes = [
        box(400, 103, 480, 131, "-1.22"),  # slightly lower than its row-mates, and out of order
        box(10, 100, 60, 128, "Fz"),
        box(200, 99, 280, 127, "2.08"),
        box(10, 140, 60, 168, "Cz"),
        box(200, 141, 280, 169, "0.47"),
        box(10, 20, 120, 48, "Summary"),
        box(125, 20, 200, 48, "table"),  # a small gap: same phrase
    ]
    assert page.text() == "Summary table\nFz   2.08   -1.22\nCz   0.47"


def test_stored_text_marks_pages_and_labels_every_source():
    pages = [
        {"page": 1, "sources": {"text layer": "Fz 1.00"}},
        {"page": 2, "sources": {"text layer": "", "OCR": "Cz 2.00"}},
    ]
    assert ingest.render_text(pages) == (
        "=== PAGE 1 / 2 ===\n[text layer]\nFz 1.00\n\n=== PAGE 2 / 2 ===\n[text layer]\n(empty)\n[OCR]\nCz 2.00\n"
    )


def test_a_page_with_enough_text_is_still_ocrd_when_images_cover_much_of_it(tmp_path):
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=9)
    for line in range(12):
        pdf.text(
            10, 10 + line * 4, f"Narrative paragraph line {line} with plenty of ordinary text layer words."
        )
    picture = io.BytesIO()
    Image.new("RGB", (800, 600), "white").save(picture, format="PNG")
    picture.seek(0)
    pdf.image(picture, x=10, y=70, w=190)
    path = tmp_path / "mixed.pdf"
    path.write_bytes(bytes(pdf.output()))
    page = pdfium.PdfDocument(path)[0]
    chars = len(page.get_textpage().get_text_bounded())
    coverage = ingest.image_coverage(page)
    assert chars > OPTIONS.ocr_min_chars
    assert 0.4 < coverage < 0.6
    assert ingest._ocr_reason(chars, coverage, OPTIONS).startswith("images cover")
    assert ingest._ocr_reason(chars, 0.05, OPTIONS) == ""
    assert ingest._ocr_reason(12, 0.0, OPTIONS) == "text layer has 12 characters (< 200)"


def test_sniffing_trusts_content_over_the_name():
    assert ingest.sniff_kind(b"%PDF-1.7\n...", "report.txt") == "pdf"
    assert ingest.sniff_kind(b"Site Delta Theta", "notes.MD") == "markdown"
    for head, name in [
        (b"\x89PNG\r\n", "scan.pdf"),
        (b"PK\x03\x04", "report.docx"),
        (b"hello", "report.pdf"),
    ]:
        try:
            ingest.sniff_kind(head, name)
        except ingest.UnreadableReport as exc:
            assert exc.status == 415 and name in exc.message
        else:
            raise AssertionError(f"{name} was accepted")
