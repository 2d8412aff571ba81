"""Council changes in a real browser: a model fails Stage 1 with a 500; on the finished run page the clinician
reads what "Rejoin" would do in the confirmation, accepts, and watches the model catch up live until the run is
complete again with all three models. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

from pathlib import Path

from tests.browser.csp import watch_csp
from tests.browser.test_council_flow import shot, sign_in
from tests.synthetic_reports import make_qeeg_pdf

GEMINI = "gemini-2.5-pro"


def test_a_failed_model_rejoins_from_the_run_page(page, app_url: str, upstream, tmp_path: Path) -> None:
    csp_violations = watch_csp(page.context)
    upstream.script(GEMINI, failures=["500"])
    sign_in(page, app_url)
    page.fill("#new-patient input[name=label]", "SYNTH-BROWSER-CHANGES")
    page.click("#new-patient button[type=submit]")
    page.wait_for_url("**/patients/*/")
    pdf = tmp_path / "synthetic-qeeg.pdf"
    make_qeeg_pdf(pdf, pages=1, image_only_pages=(), patient_label="SYNTH-BROWSER-CHANGES")
    page.set_input_files("input[name=files]", str(pdf))
    page.click("form[enctype='multipart/form-data'] button[type=submit]")
    page.locator("#reports .badge.ready").wait_for(timeout=90_000)
    page.locator("#run-wizard button[type=submit]").click()
    page.wait_for_url("**/runs/*/")
    page.locator("#run-status", has_text="Complete").wait_for(timeout=120_000)
    assert (
        page.locator(".council-line").inner_text().startswith("Council: 2 of 3 models (gemini-2.5-pro failed")
    )

    # Every change says what it does before it is made; a changed mind changes nothing.
    members = page.locator("#council-members")
    members.locator("summary").click()
    page.locator("#stage-1 .model-row.failed .row-changes summary").click()
    page.locator("#stage-1 .model-row.failed form.council-change.reask").wait_for()
    shot(page, "20-run-page-council-changes")
    dialogs: list[str] = []

    def answer(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss() if len(dialogs) == 1 else dialog.accept()

    page.on("dialog", answer)
    rejoin = members.locator("form.council-change.rejoin")
    rejoin.locator("input[name=reason]").fill("the provider is back")
    rejoin.locator("button").click()
    page.wait_for_timeout(500)
    assert (
        dialogs
        and "gemini-2.5-pro rejoins the council" in dialogs[0]
        and "Stages 1, 2, 3, 5 and 6" in dialogs[0]
    )
    assert page.locator("#run-status").inner_text() == "Complete"  # dismissed: nothing happened
    rejoin.locator("button").click()
    page.locator(".messages", has_text="rejoins the council").wait_for(timeout=15_000)
    page.locator("#run-status", has_text="Complete").wait_for(timeout=120_000)
    assert page.locator(".council-line").inner_text() == "Council: 3 of 3 models"
    assert "the provider is back" in page.locator(".council-history").inner_text()
    shot(page, "21-run-page-after-rejoin")
    assert not csp_violations, csp_violations
