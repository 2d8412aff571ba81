"""The OCR read's faster steps compute exactly what the plain numpy and PIL steps computed."""

from __future__ import annotations

import numpy as np
import pypdfium2 as pdfium
import pytest

from patients import layout
from patients.ingest import ocr_engine
from tests.synthetic_vendor import make_vendor_pdf


def test_the_percentile_floor_selects_what_np_percentile_selects():
    rng = np.random.default_rng(11)
    sizes = [*range(1, 40), 97, 1000, 4321]
    for size in sizes:
        for spread in (1, 3, 40, 510):  # many ties, some, few
            values = rng.integers(0, spread + 1, size).astype(np.int16)
            for q in (0, 25, 60, 99.5, 100):
                expected = values >= np.percentile(values, q)
                got = values >= layout._percentile_floor(values, q)
                assert (got == expected).all(), (size, spread, q)


def _pixels_by_isin(fine, labels, word):
    window = labels[word.y0 : word.y1, word.x0 : word.x1]
    return fine[word.y0 : word.y1, word.x0 : word.x1][np.isin(window, word.labels)]


def test_glyph_pixels_by_look_up_are_the_same_pixels_in_the_same_order():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 60, (80, 120)).astype(np.int32)
    fine = rng.integers(0, 256, (80, 120, 3)).astype(np.uint8)
    member = np.zeros(60, dtype=bool)
    for _ in range(200):
        x0, y0 = int(rng.integers(0, 100)), int(rng.integers(0, 60))
        word = layout._Word(
            x0, y0, x0 + int(rng.integers(1, 20)), y0 + int(rng.integers(1, 20)), rng.choice(60, 3).tolist()
        )
        got = layout._pixels(fine, labels, word, member)
        np.testing.assert_array_equal(got, _pixels_by_isin(fine, labels, word))
        assert not member.any()  # handed back clean for the next word


def test_the_page_render_is_the_pixels_pil_gave(tmp_path):
    path = tmp_path / "vendor.pdf"
    make_vendor_pdf(path, pages=[("wavi_sites", "image"), ("neuroguide_z", "text")], seed=4)
    document = pdfium.PdfDocument(path)
    try:
        for page in document:
            for dpi in (100, 300):
                through_pil = np.asarray(page.render(scale=dpi / 72).to_pil().convert("RGB"))
                got = layout.render_rgb(page, dpi)
                assert got.flags.owndata and got.shape == through_pil.shape
                np.testing.assert_array_equal(got, through_pil)
            page.close()
    finally:
        document.close()


@pytest.mark.parametrize(("part", "arena"), [("text_det", True), ("text_rec", False)])
def test_the_detector_keeps_its_memory_arena_and_the_recogniser_none(part, arena):
    engine = ocr_engine()
    holder = engine.text_det.infer if part == "text_det" else engine.text_rec.session
    assert holder.session.get_session_options().enable_cpu_mem_arena is arena
