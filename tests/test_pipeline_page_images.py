"""Page images go to Stage 1 beside the text only when DEID_PAGE_IMAGES is "paint" (then the pages that needed
OCR, with the identifying regions painted out and marked so), never when it is "off" (the default), and
nowhere but Stage 1."""

from __future__ import annotations

import base64
import io
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from council.deid import PAINTED_KEY, PAINTED_VALUE
from patients import boxes
from patients.models import Report
from patients.services import report_ingest, report_upload
from runs import services
from runs.sources import council_source
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, run_pipeline_here
from tests.synthetic_reports import make_qeeg_pdf

pytestmark = pytest.mark.django_db(transaction=True)


def _ready_pdf(tmp_path, *, pages: int = 3, image_only_pages: tuple[int, ...] = ()) -> Report:
    patient = make_patient()
    make_qeeg_pdf(tmp_path / "r.pdf", pages=pages, image_only_pages=image_only_pages)
    upload = SimpleUploadedFile("r.pdf", (tmp_path / "r.pdf").read_bytes(), content_type="application/pdf")
    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    return report


def _run(report: Report):
    return services.run_create(
        patient=report.patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )


def _image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_stage_1_gets_the_ocr_pages_painted_when_configured(fake_upstream, tmp_path, settings):
    settings.COUNCIL_PAGE_IMAGES = 2
    settings.DEID_PAGE_IMAGES = "paint"
    report = _ready_pdf(tmp_path, pages=4, image_only_pages=(2, 4))
    code, output = run_pipeline_here(_run(report))
    assert code == 0, output
    stage1 = [call for call in fake_upstream.calls if call.stage == 1]
    assert len(stage1) == 3
    for call in fake_upstream.calls:
        if call.stage is None:
            continue
        content = call.body["messages"][1]["content"]
        if call.stage == 1:
            assert content[0]["type"] == "text" and "=== PAGE 4 / 4 ===" in content[0]["text"]
            images = [part["image_url"]["url"] for part in content[1:]]
            assert len(images) == 2 and all(url.startswith("data:image/png;base64,iVBOR") for url in images)
            for url in images:
                assert _image(url).info[PAINTED_KEY] == PAINTED_VALUE
        else:
            assert isinstance(content, str)
    # Pages 2 and 4 needed OCR; page 2's caption prints the patient label (an identifier): painted black.
    sent = _image(stage1[0].body["messages"][1]["content"][1]["image_url"]["url"]).convert("L")
    words = [
        box for line in boxes.page_lines(report, 2, report.folder / "pages" / "page-0002.png") for box in line
    ]
    label_box = next(b for b in words if b.text == "SYNTH-001")
    centre = (int((label_box.left + label_box.right) / 2), int((label_box.top + label_box.bottom) / 2))
    assert sent.getpixel(centre) == 0
    # …and measurements stay readable: the box of a site label in the bitmap table is not painted.
    value_box = next(b for b in words if b.text == "Fz")
    region = sent.crop((int(value_box.left), int(value_box.top), int(value_box.right), int(value_box.bottom)))
    assert region.getextrema()[1] > 200


def test_no_page_image_leaves_when_painting_is_off(fake_upstream, tmp_path, settings):
    settings.COUNCIL_PAGE_IMAGES = 2  # asked for, but DEID_PAGE_IMAGES is "off" (the default)
    report = _ready_pdf(tmp_path, image_only_pages=(2,))  # page 2 needed OCR: it would go if painting were on
    assert council_source(patient=report.patient, report=report).images == []
    code, output = run_pipeline_here(_run(report))
    assert code == 0, output
    for call in fake_upstream.calls:
        if call.stage is not None:
            assert isinstance(call.body["messages"][1]["content"], str)


def test_a_bitmap_page_is_withheld_when_its_text_cannot_be_located(fake_upstream, tmp_path, settings):
    settings.REPORT_OCR_ENABLED = False  # the table bitmap on page 2 cannot be read, so it cannot be painted
    settings.COUNCIL_PAGE_IMAGES = 3
    settings.DEID_PAGE_IMAGES = "paint"
    report = _ready_pdf(tmp_path, image_only_pages=(2,))
    source = council_source(patient=report.patient, report=report)
    # Pages 1 and 3 are read exactly from the text layer: their images are not candidates at all.
    assert [(image.page, image.sent) for image in source.images] == [(2, False)]
    assert "OCR is off" in source.images[0].reason
    assert source.council_input.page_images == ()
