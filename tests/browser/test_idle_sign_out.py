"""An unattended run page is signed out in a real browser: the run is in progress (its models are slow), the
page holds its live stream open and its own requests go on, and still, once SESSION_IDLE_TIMEOUT_SECONDS
pass without the person doing anything, the page lands on the sign-in page, and the session is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.test_council_flow import CHROMIUM, ROOT, USER, shot, sign_in
from tests.fake_upstream.server import FakeUpstream
from tests.synthetic_reports import make_qeeg_pdf

IDLE_SECONDS = 4

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    # Every model takes its time: the run stays in Stage 1 for the whole test, so nothing it does ends the page.
    fake = FakeUpstream(default_latency=25).start()
    yield fake
    fake.stop()


@pytest.fixture
def app_env() -> dict[str, str]:
    return {"SESSION_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS)}


@pytest.fixture
def app_token(app_url: str, app_environ: dict[str, str]) -> str:
    """An API token of the app's one user (an administrator), to set the run up without the pages."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "createapitoken", USER, "--name", "browser"],
        env=app_environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _running_run(app_url: str, token: str, tmp_path: Path) -> int:
    api = httpx.Client(base_url=app_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    patient = api.post("/api/patients", json={"label": "SYNTH-IDLE-01"}).json()["id"]
    pdf = tmp_path / "idle.pdf"
    make_qeeg_pdf(pdf, pages=1, image_only_pages=(), patient_label="SYNTH-IDLE-01")
    [report] = api.post(
        f"/api/patients/{patient}/reports", files={"files": ("idle.pdf", pdf.read_bytes())}
    ).json()
    deadline = time.monotonic() + 90
    while api.get(f"/api/reports/{report['id']}").json()["status"] != "ready":
        assert time.monotonic() < deadline, "the report did not become ready"
        time.sleep(0.3)
    run = api.post("/api/runs", json={"patient_id": patient, "report_id": report["id"]}).json()["id"]
    assert api.post(f"/api/runs/{run}/start").status_code == 202
    return run


def test_an_unattended_run_page_is_signed_out(page, app_url: str, app_token: str, tmp_path: Path) -> None:
    run = _running_run(app_url, app_token, tmp_path)
    sign_in(page, app_url)
    page.goto(f"{app_url}/runs/{run}/")
    page.locator("#run-body[sse-connect]").wait_for()
    opened = time.monotonic()
    page.wait_for_url(f"**/login/?next=%2Fruns%2F{run}%2F", timeout=(IDLE_SECONDS + 10) * 1000)
    waited = time.monotonic() - opened
    shot(page, "idle-signed-out")
    assert waited >= IDLE_SECONDS - 1, waited  # not before the timeout (the page opened just before `opened`)
    assert "without activity" in page.locator("body").inner_text()
    page.goto(f"{app_url}/runs/{run}/")
    page.wait_for_url("**/login/**")  # the session is gone, not just the page
