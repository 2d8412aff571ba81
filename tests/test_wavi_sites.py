"""WAVi's typed per-site tables: four `Site S1 S2 S3` tables side by side in tiny print, read by layout from
an image-only page and from a text layer, every value with its metric, site, session and page."""

from __future__ import annotations

import pypdfium2 as pdfium

from patients import facts
from patients.ingest import ocr_engine
from patients.layout import read_ocr, read_text_layer
from patients.readers import wavi
from tests.synthetic_vendor import make_vendor_pdf
from tests.test_fact_reading import recovered


def _layouts(tmp_path, seed=21):
    pdf = tmp_path / "sites.pdf"
    truth = make_vendor_pdf(pdf, pages=[("wavi_sites", "image"), ("wavi_sites", "text")], seed=seed)
    document = pdfium.PdfDocument(pdf)
    try:
        return truth, [
            read_ocr(document[0], number=1, engine=ocr_engine()),
            read_text_layer(document[1], number=2),
        ]
    finally:
        document.close()


def test_typed_per_site_tables_are_read_from_an_image_page_and_a_text_layer(tmp_path):
    truth, layouts = _layouts(tmp_path)
    table = facts.build_table(facts.read_layouts(layouts), page_count=2)
    assert [page["reader"] for page in table["pages"]] == [wavi.SITES, wavi.SITES]
    image_share, misses = recovered(
        [f for f in table["facts"] if f["page"] == 1], [t for t in truth["facts"] if t["page"] == 1]
    )
    assert image_share >= 0.98, misses[:20]
    text_share, misses = recovered(
        [f for f in table["facts"] if f["page"] == 2], [t for t in truth["facts"] if t["page"] == 2]
    )
    assert text_share == 1.0, misses[:20]
    assert table["pages"][1]["fully_read"] and table["pages"][1]["labels_found"] == 4 * 19
    # Four tables of 19 sites by 3 sessions, a date per session; "-" stays a placeholder, units from titles.
    page2 = [f for f in table["facts"] if f["page"] == 2]
    assert len(page2) == 4 * 19 * 3 + 3
    alpha = next(
        f for f in page2 if f["metric"] == "Relative Alpha" and f["site"] == "O1" and f["session"] == 2
    )
    assert alpha["unit"] == "%" and alpha["section"] == "Relative Alpha (%)" and alpha["session_date"]
    asym = next(f for f in page2 if f["metric"] == "Alpha Asymmetry")
    assert asym["unit"] == "Z" and asym["norm"]
    dashes = [t for t in truth["facts"] if t["page"] == 2 and t["value"] == "-"]
    got = {(f["metric"], f["site"], f["session"]): f for f in page2}
    for t in dashes:
        fact = got[(t["metric"], t["site"], t["session"])]
        assert fact["placeholder"] and fact["number"] is None


def test_a_site_row_that_is_not_read_is_missing_for_every_session(tmp_path):
    pdf = tmp_path / "sites.pdf"
    make_vendor_pdf(pdf, pages=[("wavi_sites", "text")], seed=22)
    document = pdfium.PdfDocument(pdf)
    try:
        layout = read_text_layer(document[0], number=1)
    finally:
        document.close()
    # The T5 row of the first table (peak alpha frequency) is gone; the other tables' T5 rows stay.
    row = next(r for r in layout.rows() if r.boxes[0].text == "T5")
    second_table = next(b for b in row.boxes[1:] if b.text == "T5").x0
    for box in [b for b in row.boxes if b.x0 < second_table]:
        layout.boxes.remove(box)
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    missing = {(m["metric"], m["site"], m["session"]) for m in table["missing"]}
    assert missing == {("Peak Alpha Frequency", "T5", s) for s in (1, 2, 3)}
    assert not table["pages"][0]["fully_read"]
