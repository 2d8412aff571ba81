"""The fact table reviewed in a real browser (Chromium, the real app, strict CSP): a fact clicked shows its
page beside the table with the value's box highlighted (htmx swaps the viewer in, no reload), a value
corrected, the table locked. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

from pathlib import Path

from tests.browser.csp import watch_csp
from tests.browser.test_council_flow import pytestmark, shot, sign_in  # noqa: F401 (skip without chromium)
from tests.synthetic_vendor import make_vendor_pdf


def test_a_clinician_reviews_corrects_and_locks_the_fact_table(page, app_url: str, tmp_path: Path) -> None:
    csp_violations = watch_csp(page.context)
    sign_in(page, app_url)
    page.fill("#new-patient input[name=label]", "SYNTH-FACTS-BROWSER")
    page.click("#new-patient button[type=submit]")
    page.wait_for_url("**/patients/*/")
    # A WAVi-like summary as an image only (read by OCR, by layout) and a generic page with a text layer.
    pdf = tmp_path / "vendor.pdf"
    truth = make_vendor_pdf(pdf, pages=[("wavi_summary", "image"), ("generic_rows", "text")], seed=12)
    page.set_input_files("input[name=files]", str(pdf))
    page.click("form[enctype='multipart/form-data'] button[type=submit]")
    page.locator("#reports .badge.ready").wait_for(timeout=120_000)
    page.locator("#reports a", has_text="vendor.pdf").first.click()
    page.wait_for_url("**/reports/*/")
    page.locator("#fact-lock").wait_for()
    page.evaluate("() => { window.__sameDocument = true; }")

    # Click an OCR'd value: its page comes up beside the table with the value's box drawn over it.
    want = next(f for f in truth["facts"] if f["metric"] == "P300 Latency" and f["session"] == 2)
    row = page.locator(".fact-table tr", has_text="P300 Latency").filter(has_text=want["value"]).first
    row.locator("a.fact-link").click()
    page.locator("#fact-viewer #fact-box").wait_for()
    assert page.evaluate("() => window.__sameDocument") is True  # htmx swapped the viewer in
    assert "P300 Latency" in page.locator("#fact-viewer h3").inner_text()
    box = page.locator("#fact-viewer svg.fact-page #fact-box").bounding_box()
    assert box and box["width"] > 2 and box["height"] > 2  # drawn, and visible on the page image
    page.locator("#fact-viewer").scroll_into_view_if_needed()
    shot(page, "facts-01-fact-highlighted")

    # Correct it (as if the page said otherwise), then lock the table.
    page.fill("#fact-viewer input[name=value]", "333")
    page.fill("#fact-viewer input[name=note]", "checked against the printed page")
    page.click("#fact-viewer button[type=submit]")
    page.locator("#fact-correction").wait_for()
    assert "Corrected to 333" in page.locator("#fact-correction").inner_text()
    assert page.locator(".fact-table tr.corrected").count() == 1
    page.locator("#fact-viewer").scroll_into_view_if_needed()
    shot(page, "facts-02-corrected")
    page.click("#lock-facts")
    page.locator("#unlock-facts").wait_for()
    assert "Locked" in page.locator("#fact-lock").inner_text()
    page.locator(".fact-table tr.corrected a.fact-link").click()
    page.locator("#fact-viewer #fact-box").wait_for()
    assert page.locator("#fact-viewer form.fact-correct").count() == 0  # locked: no correction form
    page.locator("#facts").scroll_into_view_if_needed()
    shot(page, "facts-03-locked")
    assert not csp_violations, csp_violations
