"""The Content-Security-Policy in a real browser: every page loads with no violation reported, so nothing a
page needs (htmx, its indicator styles, the admin, the API docs) is blocked, and no inline script would run.
The clinician flow (test_council_flow.py) checks the same on every page it visits."""

from __future__ import annotations

import httpx

from tests.browser.csp import watch_csp
from tests.browser.test_council_flow import SHOTS, sign_in


def test_every_page_has_a_csp_and_none_is_violated(page, app_url: str) -> None:
    seen = watch_csp(page.context)
    page.goto(f"{app_url}/login/")
    header = httpx.get(f"{app_url}/login/").headers["content-security-policy"]
    assert "script-src 'self'" in header and "unsafe-inline" not in header
    sign_in(page, app_url)
    # A patient, so the pages have something on them (created through the page, with htmx).
    page.fill("#new-patient input[name=label]", "SYNTH-CSP-01")
    page.click("#new-patient button[type=submit]")
    page.wait_for_url("**/patients/*/")
    patient_url = page.url
    page.locator("section#runs-panel h2").wait_for(timeout=30_000)  # the htmx-loaded runs panel
    pages = [
        "/",
        patient_url,
        "/runs/",
        "/admin/",
        "/admin/patients/patient/",
        "/admin/patients/patient/1/change/",
        "/admin/auth/user/add/",
        "/api/docs",
        "/patients/999999/",  # the 404 page
    ]
    for address in pages:
        page.goto(address if address.startswith("http") else app_url + address)
        page.wait_for_load_state("networkidle")
        assert not seen, (address, seen)
    page.goto(f"{app_url}/api/docs")
    page.locator(".swagger-ui .opblock").first.wait_for(timeout=30_000)  # Swagger UI really rendered
    page.screenshot(path=str(SHOTS / "csp-api-docs.png"))
    page.goto(f"{app_url}/admin/patients/patient/")
    page.screenshot(path=str(SHOTS / "csp-admin.png"))
    assert not seen, seen


def test_the_watcher_sees_a_violation(page, app_url: str) -> None:
    """The check above can fail: an inline script injected into a real page is reported."""
    seen = watch_csp(page.context)
    page.goto(f"{app_url}/login/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.body.appendChild(s); }"
    )
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.__ran === undefined")  # blocked
    assert any("script-src" in v and "/login/" in v for v in seen), seen  # the event
    assert any("violates the following Content Security Policy" in v for v in seen), seen  # the console
