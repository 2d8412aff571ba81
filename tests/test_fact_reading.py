"""Image-only vendor pages read by layout: values keep their column, site and session (by colour), with
placeholders and range dashes, against the facts the generator printed."""

from __future__ import annotations

import dataclasses

import pypdfium2 as pdfium
import pytest

from patients import facts
from patients.ingest import ocr_engine
from patients.layout import OCR, read_ocr
from patients.readers import read_page, wavi
from patients.readers.base import fold, repair_electrode
from tests.synthetic_vendor import make_vendor_pdf

PAGES = [("wavi_summary", "image"), ("wavi_p300", "image"), ("neuroguide_z", "image")]


def recovered(table_facts: list[dict], truth: list[dict]) -> tuple[float, list]:
    """Share of printed facts found with the right value, site, band, session and page."""
    got = {
        (f["page"], f["metric"].replace(" ", "").lower(), f["site"], f["band"], f["session"]): f["value"]
        for f in table_facts
    }
    misses = []
    for t in truth:
        key = (t["page"], t["metric"].replace(" ", "").lower(), t["site"], t["band"], t["session"])
        if fold(got.get(key, "<missing>")) != fold(t["value"]):
            misses.append((key, t["value"], got.get(key)))
    return 1 - len(misses) / len(truth), misses


@pytest.fixture(scope="module")
def read_pages(tmp_path_factory):
    path = tmp_path_factory.mktemp("vendor") / "vendor.pdf"
    truth = make_vendor_pdf(path, pages=PAGES, seed=31)
    document = pdfium.PdfDocument(path)
    try:
        layouts = [read_ocr(document[i], number=i + 1, engine=ocr_engine()) for i in range(len(PAGES))]
    finally:
        document.close()
    return truth, layouts


def test_image_pages_yield_the_printed_facts_with_site_session_and_page(read_pages):
    truth, layouts = read_pages
    table = facts.build_table(facts.read_layouts(layouts), page_count=len(PAGES))
    share, misses = recovered(table["facts"], truth["facts"])
    assert share >= 0.98, misses[:20]
    assert [page["reader"] for page in table["pages"]] == [wavi.SUMMARY, wavi.P300, "neuroguide-z"]
    assert all(page["sources"] == [OCR] for page in table["pages"])
    for page in table["pages"]:
        assert page["cells_read"] > 40 and page["mean_confidence"] > 0.85, page


def test_placeholders_and_range_dashes_survive(read_pages):
    truth, layouts = read_pages
    summary = read_page(layouts[0])
    by_key = {(f["metric"].replace(" ", "").lower(), f["session"]): f for f in summary.facts}
    # Test/retest rows print "-" for session 1: it is read as a placeholder, and session 2 keeps its value.
    first = by_key[("p300latencytest/retest", 1)]
    assert first["value"] == "-" and first["placeholder"] and first["number"] is None
    second_truth = next(
        t for t in truth["facts"] if t["metric"] == "P300 Latency Test/Retest" and t["session"] == 2
    )
    assert by_key[("p300latencytest/retest", 2)]["value"] == second_truth["value"]
    # N/A stays N/A: a fact with no number, not a missing fact.
    errors = by_key[("errors", 2)]
    assert errors["value"] == "N/A" and errors["number"] is None and errors["placeholder"]
    # The range keeps its dash (the en dash reads as "-"), not "253364ms".
    assert by_key[("reactiontime", 1)]["target"] == "253-364 ms"
    assert by_key[("theta/betaratio", 3)]["target"] == "0.9-2.2"
    assert by_key[("peakalphafrequencyec", 2)]["target"] == "9.0-11.0 Hz"


def test_p300_sessions_come_from_colour_alone(read_pages):
    _, layouts = read_pages
    p300 = layouts[1]
    reading = read_page(p300)
    sessions = {f["session"] for f in reading.facts if f["metric"].startswith("P300 Rare")}
    assert sessions == {1, 2, 3}
    # Without colours the rows cannot be told apart, and the reader says so instead of guessing.
    grey = dataclasses.replace(p300, boxes=[dataclasses.replace(b, colour=None) for b in p300.boxes])
    blind = read_page(grey)
    assert not [f for f in blind.facts if f["metric"].startswith("P300 Rare")]
    assert any("colour key" in note for note in blind.notes)


def test_electrode_labels_are_repaired_from_the_10_20_vocabulary():
    assert repair_electrode("01") == "O1"
    assert repair_electrode("02") == "O2"
    assert repair_electrode("FP1") == "Fp1"
    assert repair_electrode("F2") == "Fz"  # F2 is no 10-20 site; Z read as 2
    assert repair_electrode("Tz") is None
    assert repair_electrode("Session") is None


def test_letters_read_for_digits_are_repaired_only_where_the_cell_is_a_number_and_marked_unsure():
    from patients.layout import Box, PageLayout
    from patients.readers.base import make_fact, parse_value

    assert parse_value("1o.5") == ("10.5", 10.5, False)
    assert parse_value("N/A") == ("N/A", None, True)
    assert parse_value("Session") == ("Session", None, False)
    page = PageLayout(page=2, source=OCR, width=600, height=800)
    sure = make_fact(page, reader="t", metric="m", boxes=[Box("352", 0, 0, 10, 5, 0.99)])
    unsure = make_fact(page, reader="t", metric="m", boxes=[Box("35Z", 0, 0, 10, 5, 0.99)])
    repaired = make_fact(page, reader="t", metric="m", boxes=[Box("3S2", 0, 0, 10, 5, 0.99)])
    assert sure["read_as"] == "" and sure["confidence"] == 0.99
    assert unsure["value"] == "35Z" and unsure["number"] is None  # not a number: left as read
    assert repaired["value"] == "352" and repaired["read_as"] == "3S2" and repaired["confidence"] < 0.7
