"""Reviewing the fact table on the report page: a fact clicked shows its page image with the value's box
highlighted (an SVG over the page in PDF points, fetched by htmx or rendered in place for `?fact=`); a
clinician or staff member corrects a value there and locks the table; refusals come back beside the fact
with a 4xx and write nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from audit.models import AuditEvent
from patients import facts, selectors, services
from patients.models import Patient, Report
from tests.synthetic_reports import make_text_report
from tests.synthetic_vendor import make_vendor_pdf


@pytest.fixture
def report(db, tmp_path: Path, launched, clinician) -> Report:
    """A WAVi-like summary and a generic page with a text layer, read by the real ingestion (boxes real)."""
    patient = Patient.objects.create(label="SYNTH-REVIEW")
    make_vendor_pdf(tmp_path / "v.pdf", pages=[("wavi_summary", "text"), ("generic_rows", "text")], seed=8)
    upload = SimpleUploadedFile("v.pdf", (tmp_path / "v.pdf").read_bytes(), content_type="application/pdf")
    [report] = services.report_upload(patient=patient, files=[upload])
    report = services.report_ingest(report_id=report.pk)
    assert report is not None and report.status == Report.Status.READY, report and report.error
    return report


def _fact(report: Report, metric: str, session: int = 1) -> dict:
    return next(
        f
        for f in facts.load_table(report.folder)["facts"]
        if f["metric"] == metric and f["session"] == session
    )


def _viewer(client, report: Report, fact_id: str):
    return client.get(
        reverse("patients:report_fact", args=[report.pk]), {"fact": fact_id}, headers={"HX-Request": "true"}
    )


def _rect(html: str) -> tuple[float, float, float, float]:
    match = re.search(
        r'<rect class="fact-box" id="fact-box" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" '
        r'height="([\d.]+)"',
        html,
    )
    assert match, html
    return tuple(float(v) for v in match.groups())


def test_a_clicked_fact_shows_its_page_with_the_values_box_on_its_ink(clinician_client, report):
    fact = _fact(report, "Trail Making Test B", 2)
    page = clinician_client.get(reverse("patients:report", args=[report.pk])).content.decode()
    assert f'hx-get="{reverse("patients:report_fact", args=[report.pk])}?fact=' in page
    assert 'hx-target="#fact-viewer"' in page and 'id="fact-viewer"' in page
    answer = _viewer(clinician_client, report, fact["id"])
    assert answer.status_code == 200
    html = answer.content.decode()
    assert html.lstrip().startswith("<aside") and "<html" not in html  # the fragment only
    assert (
        f"[p{fact['page']}] Trail Making Test B" in html
        and f'<strong class="fact-read">{fact["value"]}' in html
    )
    quality = facts.load_table(report.folder)["pages"][fact["page"] - 1]
    assert f'viewBox="0 0 {quality["width"]:.2f} {quality["height"]:.2f}"' in html
    x, y, width, height = _rect(html)
    x0, y0, x1, y1 = fact["box"]
    assert (x, y, width, height) == pytest.approx((x0 - 2, y0 - 2, x1 - x0 + 4, y1 - y0 + 4), abs=0.01)
    # The box drawn over the page image lands on the printed value: ink inside it, the page's white around.
    path = selectors.report_page_image(report, fact["page"])
    with Image.open(path) as image:
        scale = image.width / quality["width"]
        inside = image.convert("L").crop(tuple(round(v * scale) for v in (x0, y0, x1, y1)))
        assert inside.getextrema()[0] < 100
        above = image.convert("L").crop(tuple(round(v * scale) for v in (x0, y0 - 6, x1, y0 - 3)))
        assert above.getextrema()[0] > 200
    assert 'class="fact-zoom"' in html and "Save correction" in html


def test_without_htmx_the_report_page_shows_the_fact_in_place(clinician_client, report):
    fact = _fact(report, "Reaction Time", 1)
    url = reverse("patients:report_fact", args=[report.pk])
    redirected = clinician_client.get(url, {"fact": fact["id"]})
    assert redirected.status_code == 302 and "?fact=" in redirected["Location"]
    page = clinician_client.get(redirected["Location"]).content.decode()
    assert 'id="fact-box"' in page and 'class="chosen"' in page.replace(' class=" chosen"', ' class="chosen"')
    assert _viewer(clinician_client, report, "no-such-fact").status_code == 404


def test_a_fact_without_a_position_says_it_cannot_be_highlighted(clinician_client, report):
    table = facts.load_table(report.folder)
    table["facts"][0]["box"] = []
    facts.write_table(report.folder, table)
    html = _viewer(clinician_client, report, table["facts"][0]["id"]).content.decode()
    assert 'id="fact-box"' not in html and "recorded no position for this value" in html
    assert 'class="fact-page"' in html  # the whole page is still shown


def test_a_text_upload_has_no_page_to_highlight(clinician_client, db, tmp_path, launched, clinician):
    patient = Patient.objects.create(label="SYNTH-TXT")
    make_text_report(tmp_path / "r.txt", seed=2)
    upload = SimpleUploadedFile("r.txt", (tmp_path / "r.txt").read_bytes(), content_type="text/plain")
    [report] = services.report_upload(patient=patient, files=[upload])
    report = services.report_ingest(report_id=report.pk)
    table = facts.load_table(report.folder)
    table["facts"] = [{**_any_fact(), "id": "t1", "page": 1}]
    facts.write_table(report.folder, table)
    html = _viewer(clinician_client, report, "t1").content.decode()
    assert "has no page image to show" in html and "<svg" not in html


def _any_fact() -> dict:
    return {
        "metric": "Theta/Beta Ratio", "section": "", "site": None, "band": None, "session": 1,
        "session_date": None, "value": "2.4", "read_as": "", "number": 2.4, "placeholder": False, "unit": "",
        "target": "", "norm": "", "reader": "generic", "source": "text layer", "confidence": 1.0, "box": [],
        "disagreement": False, "disagrees_with": [], "correction": None,
    }  # fmt: skip


def test_a_clinician_corrects_a_value_on_the_page_and_it_is_audited(clinician_client, report, clinician):
    fact = _fact(report, "Reaction Time", 2)
    answer = clinician_client.post(
        reverse("patients:report_fact_correct", args=[report.pk]),
        {"fact": fact["id"], "value": "412", "note": "misread"},
    )
    assert answer.status_code == 302 and "?fact=" in answer["Location"]
    stored = _fact(report, "Reaction Time", 2)
    assert stored["value"] == fact["value"] and stored["correction"]["value"] == "412"
    assert stored["correction"]["by"] == "clinician" and stored["correction"]["note"] == "misread"
    page = clinician_client.get(answer["Location"]).content.decode()
    assert f"read <s>{fact['value']}</s>" in page and "Corrected to <strong>412</strong> by clinician" in page
    assert f"Corrected Reaction Time on page 1: 412 (read as {fact['value']})" in page
    event = AuditEvent.objects.get(action="fact.corrected")
    assert event.user == clinician and event.detail == {"page": 1, "removed": False}


def test_a_bad_value_comes_back_beside_the_fact_and_nothing_is_written(clinician_client, report):
    fact = _fact(report, "Reaction Time", 2)
    before = (report.folder / facts.FACTS_FILE).read_bytes()
    answer = clinician_client.post(
        reverse("patients:report_fact_correct", args=[report.pk]), {"fact": fact["id"], "value": "fast"}
    )
    assert answer.status_code == 422
    html = answer.content.decode()
    assert 'id="fact-error"' in html and "“fast” is not a number" in html and 'id="fact-box"' in html
    assert (report.folder / facts.FACTS_FILE).read_bytes() == before
    assert not AuditEvent.objects.filter(action="fact.corrected").exists()


def test_staff_lock_the_table_which_then_refuses_corrections_until_unlocked(
    staff_client, clinician_client, report
):
    lock_url = reverse("patients:report_facts_lock", args=[report.pk])
    page = staff_client.get(reverse("patients:report", args=[report.pk])).content.decode()
    assert 'id="lock-facts"' in page and "Not locked" in page
    assert staff_client.post(lock_url).status_code == 302
    lock = facts.load_table(report.folder)["lock"]
    assert lock["by"] == "staff"
    fact = _fact(report, "Reaction Time", 1)
    page = clinician_client.get(reverse("patients:report", args=[report.pk]), {"fact": fact["id"]}).content
    assert b"Save correction" not in page and b"unlock it to correct a value" in page
    refused = clinician_client.post(
        reverse("patients:report_fact_correct", args=[report.pk]), {"fact": fact["id"], "value": "400"}
    )
    assert refused.status_code == 409 and "locked by staff" in refused.content.decode()
    assert _fact(report, "Reaction Time", 1)["correction"] is None
    assert clinician_client.post(lock_url, {"unlock": "1"}).status_code == 302
    assert facts.load_table(report.folder)["lock"] is None
    actions = list(
        AuditEvent.objects.filter(action__startswith="facts.")
        .order_by("pk")
        .values_list("action", "username")
    )
    assert actions == [("facts.locked", "staff"), ("facts.unlocked", "clinician")]


def test_roles_without_the_right_see_no_form(db, report, auditor, other_clinician):
    from tests.conftest import signed_in

    fact = _fact(report, "Reaction Time", 1)
    for user in (auditor, other_clinician):
        client = signed_in(user)
        assert client.get(reverse("patients:report", args=[report.pk])).status_code == 404
        answer = client.post(
            reverse("patients:report_fact_correct", args=[report.pk]), {"fact": fact["id"], "value": "1"}
        )
        assert answer.status_code == 404
    assert _fact(report, "Reaction Time", 1)["correction"] is None
