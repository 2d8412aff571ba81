"""A summary table that exists only as an image reaches the stored text through local OCR, with its page."""

from __future__ import annotations

import json
import re
import time

from django.core.files.uploadedfile import SimpleUploadedFile

from patients import selectors, services
from patients.models import Patient, Report
from tests.synthetic_reports import SITES, make_qeeg_pdf, numbers_in


def page_sections(text: str) -> dict[int, str]:
    parts = re.split(r"^=== PAGE (\d+) / (\d+) ===$", text, flags=re.M)
    return {int(parts[i]): parts[i + 2] for i in range(1, len(parts), 3)}


def test_image_only_table_numbers_appear_via_ocr_on_their_page(staff_api, db, tmp_path, launched, capsys):
    patient = Patient.objects.create(label="SYNTH-OCR")
    pdf = tmp_path / "vendor.pdf"
    content = make_qeeg_pdf(pdf, pages=3, image_only_pages=(2,))
    response = staff_api.post(
        f"/api/patients/{patient.pk}/reports", {"files": [SimpleUploadedFile("vendor.pdf", pdf.read_bytes())]}
    )
    report_id = response.json()[0]["id"]

    started = time.monotonic()
    report = services.report_ingest(report_id=report_id)
    elapsed = time.monotonic() - started
    assert report is not None and report.status == Report.Status.READY, report and report.error

    text = selectors.report_text(report)
    sections = page_sections(text)
    assert sorted(sections) == [1, 2, 3]
    image_page = content["pages"][1]
    assert image_page["kind"] == "image"
    # The image page's text layer holds only the caption; the table's numbers come from OCR, on page 2.
    layer, ocr = sections[2].split("[OCR]\n")
    assert "[text layer]" in layer
    for number in image_page["numbers"]:
        assert number not in numbers_in(layer)
        assert number in numbers_in(ocr), f"{number} missing from OCR of page 2:\n{ocr}"
        assert number not in numbers_in(sections[1]) | numbers_in(sections[3])
    # Rows stay rows: each site's four Z-scores on one line, left to right.
    lines = ocr.splitlines()
    for site in ("Fz", "Cz", "Pz"):
        expected = [image_page["z_scores"][site][band] for band in ("Delta", "Theta", "Alpha", "Beta")]
        row = next(line for line in lines if line.startswith(site))
        assert row.split()[1:] == expected
    # Text pages were not OCR'd; their numbers come from the text layer.
    assert "[OCR]" not in sections[1] and "[OCR]" not in sections[3]
    for number in content["pages"][0]["numbers"]:
        assert number in numbers_in(sections[1])

    meta = json.loads((report.folder / "pages.json").read_text())
    page2 = meta["pages"][1]
    assert page2["ocr_ran"] is True
    assert page2["chars"]["OCR"] > page2["chars"]["text layer"]
    assert 0.8 < page2["ocr_confidence"] <= 1.0
    assert [p["ocr_ran"] for p in meta["pages"]] == [False, True, False]
    images = selectors.report_page_images(report)
    assert [p.name for p in images] == ["page-0001.png", "page-0002.png", "page-0003.png"]
    assert all(p.stat().st_size > 1000 for p in images)
    assert (report.folder / "thumbs" / "page-0002.png").exists()
    with capsys.disabled():
        print(
            f"\n[ingest] 3-page report with 1 OCR page: {elapsed:.2f} s; OCR of page 2: {page2['ocr_seconds']} s"
        )

    as_json = staff_api.get(f"/api/reports/{report.pk}/text?format=json").json()
    assert as_json["pages"][1]["ocr_ran"] is True
    assert image_page["p300_latency_ms"] in as_json["pages"][1]["sources"]["OCR"]
    png = staff_api.get(f"/api/reports/{report.pk}/pages/2.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert b"".join(png.streaming_content).startswith(b"\x89PNG")
    assert set(SITES) <= set(re.findall(r"\b(Fz|Cz|Pz|O1|O2)\b", sections[1]))
