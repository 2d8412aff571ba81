"""The site's icon: a browser that asks for /favicon.ico (every page, the admin's too) gets it, within the
CSP, and a page's console reports no failed load."""

from __future__ import annotations

from tests.browser.test_council_flow import sign_in


def test_pages_load_their_icon_with_nothing_failed_in_the_console(page, app_url: str) -> None:
    errors: list[str] = []
    failed: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{app_url}/login/")
    sign_in(page, app_url)
    for address in ("/", "/runs/", "/admin/"):
        page.goto(app_url + address)
        page.wait_for_load_state("networkidle")
        # Loaded as an image, as a browser loads an icon: img-src 'self' lets it through.
        size = page.evaluate(
            """() => new Promise((done) => { const icon = new Image();
                 icon.onload = () => done(icon.naturalWidth); icon.onerror = () => done(0);
                 icon.src = '/favicon.ico?' + Math.random(); })"""
        )
        assert size >= 16, address
    assert not failed, failed
    assert not errors, errors
