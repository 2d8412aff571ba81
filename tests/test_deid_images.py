"""Painting page images: identifiers printed inside a bitmap (found by OCR) and in the text layer are painted
black on the image that would be sent, the measurements beside them stay legible, and the image is marked."""

from __future__ import annotations

import io
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from fpdf import FPDF
from PIL import Image

from council.deid import PAINTED_KEY, PAINTED_VALUE, Identifiers, identifying_boxes, paint_out
from patients import boxes
from patients.models import Patient, PatientIdentifier, Report
from patients.services import report_ingest, report_upload
from runs import sources
from tests.synthetic_reports import render_table_image

pytestmark = pytest.mark.django_db


class Box:
    def __init__(self, text: str, left: float, top: float, right: float, bottom: float) -> None:
        self.text, self.left, self.top, self.right, self.bottom = text, left, top, right, bottom


def test_identifying_boxes_finds_identifiers_split_over_boxes_and_lines():
    lines = [
        [Box("Patient:", 0, 0, 40, 10), Box("Anna", 45, 0, 70, 10), Box("Muller", 75, 0, 110, 10)],
        [Box("DOB", 0, 20, 20, 30), Box("03/14/2016", 25, 20, 80, 30), Box("Fz", 90, 20, 100, 30)],
        [Box("12", 0, 40, 10, 50), Box("Oak", 15, 40, 30, 50), Box("Street,", 35, 40, 60, 50)],
        [Box("P300", 0, 60, 20, 70), Box("253-364", 25, 60, 60, 70), Box("ms", 65, 60, 75, 70)],
    ]
    found = identifying_boxes(lines, Identifiers(names=("Anna Müller",)))
    assert [b.text for b in found] == ["Anna", "Muller", "03/14/2016", "12", "Oak", "Street,"]


def test_paint_out_blackens_the_boxes_and_marks_the_image():
    buffer = io.BytesIO()
    Image.new("RGB", (100, 50), "white").save(buffer, format="PNG")
    painted = Image.open(io.BytesIO(paint_out(buffer.getvalue(), [Box("x", 10, 10, 30, 20)], margin=0)))
    assert painted.info[PAINTED_KEY] == PAINTED_VALUE
    assert painted.convert("L").getpixel((20, 15)) == 0 and painted.convert("L").getpixel((60, 40)) == 255


def test_an_identifier_inside_a_bitmap_is_painted_from_its_ocr_box(tmp_path, settings):
    settings.DEID_PAGE_IMAGES = "paint"
    settings.COUNCIL_PAGE_IMAGES = 1
    patient = Patient.objects.create(label="SYNTH-IMG")
    PatientIdentifier.objects.create(patient=patient, kind="name", value="Anna Muller")
    bitmap = render_table_image("Patient: Anna Muller", ["Fz 1.23 -0.45", "Cz 2.10 0.88", "P300 312 ms"])
    png = io.BytesIO()
    bitmap.save(png, format="PNG")
    pdf = FPDF(format="A4", unit="mm")
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.text(15, 15, "Summary page (table as image)")
    png.seek(0)
    pdf.image(png, x=10, y=25, w=190)
    (tmp_path / "img.pdf").write_bytes(bytes(pdf.output()))
    upload = SimpleUploadedFile(
        "img.pdf", (tmp_path / "img.pdf").read_bytes(), content_type="application/pdf"
    )
    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    image_path = report.folder / "pages" / "page-0001.png"
    words = [box for line in boxes.page_lines(report, 1, image_path) for box in line]
    name = next(b for b in words if "Muller" in b.text)
    value = next(b for b in words if "2.10" in b.text)
    png_bytes, decision = sources.painted_page(report, 1, sources.identifiers_for(patient, report))
    assert decision.sent and decision.painted >= 2  # "Anna", "Muller" (and the label, an identifier too)
    sent = Image.open(io.BytesIO(png_bytes)).convert("L")
    assert sent.getpixel((int((name.left + name.right) / 2), int((name.top + name.bottom) / 2))) == 0
    region = sent.crop((int(value.left), int(value.top), int(value.right), int(value.bottom)))
    assert region.getextrema() == (0, 255)  # black glyphs on white: still printed, not painted over
