"""Pages of a known layout know what they contain: a fact they must have and nobody read is reported missing,
and the page says why it is not fully read (the measures the vision reader is sent on)."""

from __future__ import annotations

import pypdfium2 as pdfium

from patients import facts
from patients.layout import read_text_layer
from patients.readers import wavi
from tests.synthetic_vendor import make_vendor_pdf


def _layout(tmp_path, kind: str, seed: int = 7):
    pdf = tmp_path / f"{kind}.pdf"
    truth = make_vendor_pdf(pdf, pages=[(kind, "text")], seed=seed)
    document = pdfium.PdfDocument(pdf)
    try:
        return truth, read_text_layer(document[0], number=1)
    finally:
        document.close()


def test_a_wavi_summary_row_that_is_not_read_is_missing_for_every_session(tmp_path):
    truth, layout = _layout(tmp_path, "wavi_summary")
    whole = facts.build_table(facts.read_layouts([layout]), page_count=1)
    assert whole["missing"] == [] and whole["pages"][0]["fully_read"] and whole["pages"][0]["unsure"] == []
    # The whole "Peak Alpha Frequency EO" row is gone (label and values): nothing on the page names it,
    # yet a WAVi summary must have it.
    row = next(r for r in layout.rows() if "Peak Alpha Frequency EO" in r.text)
    start = next(b for b in row.boxes if b.text == "Peak").x0
    # Its own block only (the right-hand one), not the row beside it.
    for box in [b for b in row.boxes if b.x0 >= start]:
        layout.boxes.remove(box)
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    assert table["missing"] == [
        {"page": 1, "metric": "Peak Alpha Frequency EO", "site": None, "band": None, "session": s}
        for s in (1, 2, 3)
    ]
    page = table["pages"][0]
    assert not page["fully_read"] and page["unsure"] == [f"3 of {page['expected']} expected facts missing"]
    # Everything else on the page is still read.
    assert len(table["facts"]) == len(truth["facts"]) - 3


def test_a_wavi_summary_without_its_session_table_still_expects_its_measures(tmp_path):
    _, layout = _layout(tmp_path, "wavi_summary")
    dates = {b.text for b in layout.boxes if b.text.count("/") == 2}
    layout.boxes = [b for b in layout.boxes if b.text not in dates]
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    missing = {(m["metric"], m["session"]) for m in table["missing"]}
    assert missing == {("Session date", s) for s in (1, 2, 3)}
    assert "no session table found" in " ".join(table["pages"][0]["notes"])


def test_a_p300_page_whose_panels_cannot_be_found_expects_every_panel_and_is_not_fully_read(tmp_path):
    truth, layout = _layout(tmp_path, "wavi_p300")
    layout.boxes = [b for b in layout.boxes if b.text not in ("#", "UV", "MS")]
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    page = table["pages"][0]
    assert page["reader"] == wavi.P300 and not page["fully_read"]
    panel_facts = [t for t in truth["facts"] if t["metric"] != "Session date"]
    assert len(table["missing"]) == len(panel_facts) == page["missing"]
    assert {(m["site"], m["session"]) for m in table["missing"]} >= {("O1", 1), ("Average", 3)}
    assert any("expected facts missing" in reason for reason in page["unsure"])
    assert any("no table cell read" in reason for reason in page["unsure"])


def test_unsure_reasons_come_from_the_reading_measures():
    quality = {"labels_found": 20, "labels_expected": 22, "cells_read": 10, "merged_tokens": 2}
    reasons = facts.unsure_reasons(
        {**quality, "mean_confidence": 0.7}, reader="wavi-p300", missing=4, expected=100
    )
    assert reasons == [
        "4 of 100 expected facts missing",
        "20 of 22 labels found",
        "2 merged tokens left",
        "mean confidence 0.70 (< 0.85)",
    ]
    assert facts.unsure_reasons({**quality, "mean_confidence": None}, reader=None, missing=0, expected=0) == [
        "no reader knows this page's layout"
    ]
