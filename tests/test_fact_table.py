"""The fact table: written beside text.md during ingestion, served by the API, shown on the report page;
missing expected facts are reported, disagreements between readers kept and marked."""

from __future__ import annotations

import dataclasses
import json

import pypdfium2 as pdfium
from django.core.files.uploadedfile import SimpleUploadedFile

from patients import facts, services
from patients.layout import OCR, read_text_layer
from patients.models import Patient, Report
from tests.synthetic_vendor import make_vendor_pdf
from tests.test_fact_reading import recovered

TEXT_PAGES = [
    ("wavi_summary", "text"),
    ("wavi_p300", "text"),
    ("neuroguide_z", "text"),
    ("generic_rows", "text"),
]


def _ingested(staff_api, tmp_path, *, pages=TEXT_PAGES, seed=5):
    patient = Patient.objects.create(label="SYNTH-FACTS")
    pdf = tmp_path / "vendor.pdf"
    truth = make_vendor_pdf(pdf, pages=pages, seed=seed)
    response = staff_api.post(
        f"/api/patients/{patient.pk}/reports", {"files": [SimpleUploadedFile("vendor.pdf", pdf.read_bytes())]}
    )
    assert response.status_code == 201, response.content
    report = services.report_ingest(report_id=response.json()[0]["id"])
    assert report is not None and report.status == Report.Status.READY, report and report.error
    return report, truth


def test_ingestion_writes_the_fact_table_beside_the_text_and_the_api_serves_it(
    staff_api, db, tmp_path, launched
):
    report, truth = _ingested(staff_api, tmp_path)
    assert (report.folder / "text.md").exists() and (report.folder / facts.FACTS_FILE).exists()
    response = staff_api.get(f"/api/reports/{report.pk}/facts")
    assert response.status_code == 200
    table = response.json()
    assert table == json.loads((report.folder / facts.FACTS_FILE).read_text())
    share, misses = recovered(table["facts"], truth["facts"])
    assert share == 1.0, misses[:10]
    assert [p["reader"] for p in table["pages"]] == ["wavi-summary", "wavi-p300", "neuroguide-z", "generic"]
    assert all(p["fully_read"] and p["sources"] == ["text layer"] for p in table["pages"])
    assert table["missing"] == [] and table["disagreements"] == 0 and table["lock"] is None
    z = next(f for f in table["facts"] if f["metric"] == "Absolute Power Z" and f["site"] == "O1")
    assert z["unit"] == "Z" and z["norm"] and z["session"] == 1 and z["box"] and z["source"] == "text layer"
    trail = next(f for f in table["facts"] if f["metric"] == "Trail Making Test A" and f["session"] == 1)
    assert (
        trail["unit"] == "sec" and trail["target"] == "38-64 sec" and trail["number"] == float(trail["value"])
    )
    p300 = next(f for f in table["facts"] if f["metric"] == "P300 Rare latency" and f["site"] == "Cz")
    assert p300["session_date"] and p300["unit"] == "ms" and p300["correction"] is None


def test_fact_api_refuses_unknown_unready_and_anonymous(staff_api, outsider, db, tmp_path, launched):
    assert staff_api.get("/api/reports/999999/facts").status_code == 404
    patient = Patient.objects.create(label="SYNTH-PENDING")
    pdf = tmp_path / "v.pdf"
    make_vendor_pdf(pdf, pages=[("generic_rows", "text")])
    report_id = staff_api.post(
        f"/api/patients/{patient.pk}/reports", {"files": [SimpleUploadedFile("v.pdf", pdf.read_bytes())]}
    ).json()[0]["id"]
    pending = staff_api.get(f"/api/reports/{report_id}/facts")
    assert pending.status_code == 409 and "pending" in pending.json()["detail"]
    services.report_ingest(report_id=report_id)
    assert outsider.get(f"/api/reports/{report_id}/facts").status_code == 401
    assert staff_api.get(f"/api/reports/{report_id}/facts").status_code == 200


def _text_layouts(tmp_path, pages, seed=5):
    pdf = tmp_path / "layout.pdf"
    truth = make_vendor_pdf(pdf, pages=pages, seed=seed)
    document = pdfium.PdfDocument(pdf)
    try:
        return truth, [read_text_layer(document[i], number=i + 1) for i in range(len(pages))]
    finally:
        document.close()


def test_a_value_missing_from_a_known_layout_is_reported_missing(tmp_path):
    truth, (layout,) = _text_layouts(tmp_path, [("neuroguide_z", "text")])
    dropped = next(t for t in truth["facts"] if t["site"] == "Pz" and t["band"] == "Alpha")
    row = next(r for r in layout.rows() if r.boxes[0].text == "Pz")
    target = row.boxes[3]  # site, Delta, Theta, Alpha
    assert target.text == dropped["value"]
    layout.boxes.remove(target)
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    assert table["missing"] == [
        {"page": 1, "metric": "Absolute Power Z", "site": "Pz", "band": "Alpha", "session": 1}
    ]
    assert table["pages"][0]["missing"] == 1 and not table["pages"][0]["fully_read"]


def test_two_readers_that_disagree_are_both_kept_and_marked(tmp_path):
    truth, (layout,) = _text_layouts(tmp_path, [("generic_rows", "text")])
    fact = next(t for t in truth["facts"] if t["metric"] == "Digit Span Forward" and t["session"] == 2)
    row = next(r for r in layout.rows() if r.text.startswith("Digit Span Forward"))
    original = row.boxes[4]  # label (3 words), then session 1, session 2
    assert original.text != "99"
    ocr = dataclasses.replace(
        layout,
        source=OCR,
        boxes=[dataclasses.replace(b, text="99", source=OCR) if b is original else b for b in layout.boxes],
    )
    table = facts.build_table(facts.read_layouts([layout, ocr]), page_count=1)
    both = [f for f in table["facts"] if f["metric"] == "Digit Span Forward" and f["session"] == 2]
    assert (
        sorted(f["value"] for f in both) == sorted([fact["value"], "99"]) and original.text == fact["value"]
    )
    assert all(f["disagreement"] for f in both) and table["disagreements"] == 1
    assert both[0]["disagrees_with"] == [both[1]["id"]]
    # Everything the two readings agree on is kept once.
    agreed = [f for f in table["facts"] if f["metric"] == "Digit Span Forward" and f["session"] == 1]
    assert len(agreed) == 1 and agreed[0]["source"] == "text layer" and not agreed[0]["disagreement"]
    assert table["pages"][0]["sources"] == ["text layer", OCR]


def test_report_page_shows_the_fact_table_and_how_each_page_was_read(
    staff_api, clinician_client, db, tmp_path, launched
):
    report, truth = _ingested(staff_api, tmp_path, pages=[("generic_rows", "text")])
    html = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert "Facts read from the pages" in html
    assert "Merged tokens left" in html and "Fully read" in html
    value = next(t for t in truth["facts"] if t["metric"] == "Trail Making Test B" and t["session"] == 3)[
        "value"
    ]
    assert f'<td class="value">{value}</td>' in html
    assert "Trail Making Test B" in html and "60-120 sec" in html


def test_a_site_by_band_z_table_of_another_vendor_is_read_whole_in_the_rows_it_prints(tmp_path):
    from tests.synthetic_reports import make_qeeg_pdf

    pdf = tmp_path / "plain.pdf"
    content = make_qeeg_pdf(pdf, pages=1, image_only_pages=())
    document = pdfium.PdfDocument(pdf)
    try:
        layout = read_text_layer(document[0], number=1)
    finally:
        document.close()
    table = facts.build_table(facts.read_layouts([layout]), page_count=1)
    got = {(f["site"], f["band"]): f["value"] for f in table["facts"]}
    assert got == {
        (site, band): value
        for site, bands in content["pages"][0]["z_scores"].items()
        for band, value in bands.items()
    }
    assert {f["metric"] for f in table["facts"]} == {"Absolute Band Power Z"}
    assert (
        table["missing"] == []
        and table["pages"][0]["fully_read"]
        and table["pages"][0]["labels_expected"] == 5
    )
