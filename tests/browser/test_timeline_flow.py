"""Several reports of one patient in a real browser: two generated vendor exports of one patient's visits
(the second repeating the first's last visit) uploaded on the patient page and read by the app's own
ingestion; the trend charts drawn (every chart image loads, the strict CSP reports nothing); the wizard
with both reports ticked; the run over both completes. Screenshots in test-artifacts/browser/."""

from __future__ import annotations

from tests.browser.csp import watch_csp
from tests.browser.test_council_flow import shot, sign_in, upload_reports
from tests.synthetic_vendor import Sessions, make_vendor_pdf, patient_history

PAGES = [("wavi_summary", "text"), ("wavi_p300", "text"), ("generic_rows", "text")]


def test_two_exports_on_one_timeline_charts_and_a_run_over_both(page, app_url, tmp_path):
    seen = watch_csp(page.context)
    sign_in(page, app_url)
    page.fill("#new-patient input[name=label]", "SYNTH-TIMELINE-01")
    page.click("#new-patient button[type=submit]")
    page.wait_for_url("**/patients/*/")
    visits = patient_history(seed=5, count=5)
    files = []
    for name, dates, seed in [("visits-1-3.pdf", visits[0:3], 1), ("visits-3-5.pdf", visits[2:5], 2)]:
        path = tmp_path / name
        make_vendor_pdf(
            path, pages=PAGES, seed=seed, label="SYNTH-TIMELINE-01", sessions=Sessions(dates, history=5)
        )
        files.append(str(path))
    upload_reports(page, files)
    page.reload()

    # The timeline: five visits, visit 3 printed by both exports; a chart per measurement.
    trends = page.locator("#trends")
    trends.wait_for()
    assert trends.locator("tr.timeline-session").count() == 5
    assert "session 3 = visits-3-5.pdf session 1" in trends.inner_text()
    charts = trends.locator(":scope > .trend-grid img")
    assert charts.count() >= 10
    page.locator("#trends").scroll_into_view_if_needed()
    for index in range(charts.count()):
        charts.nth(index).scroll_into_view_if_needed()
    page.wait_for_load_state("networkidle")
    widths = page.evaluate(
        "() => [...document.querySelectorAll('#trends > .trend-grid img')].map(i => i.complete && i.naturalWidth)"
    )
    assert all(widths), widths
    page.locator("#trends details").first.click()  # a per-site group opens with its charts
    page.wait_for_function(
        "() => { const i = document.querySelector('#trends details[open] img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    page.locator("#trends").screenshot(path=str(shot_path("10-patient-trends")))

    # The wizard offers both reports; tick the second too and run the council over both.
    wizard = page.locator("#run-wizard")
    wizard.wait_for(timeout=30_000)
    boxes = wizard.locator("input[name=reports]")
    assert boxes.count() == 2
    for index in range(2):
        boxes.nth(index).check()
    wizard.screenshot(path=str(shot_path("11-wizard-two-reports")))
    wizard.locator("button[type=submit]").click()
    page.wait_for_url("**/runs/*/")
    page.locator("#run-status", has_text="Complete").wait_for(timeout=240_000)
    shot(page, "12-run-over-two-reports")
    assert not seen, seen


def shot_path(name: str):
    from tests.browser.test_council_flow import SHOTS

    return SHOTS / f"{name}.png"
