"""The whole clinician flow in a real browser: Debian's Chromium driven by Playwright against the real app
(`manage.py serve`, daphne) on a throw-away data folder, with the fake CLIProxyAPI; ingestion and the council
run in the `manage.py` processes the app launches itself. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.csp import watch_csp
from tests.browser.flaky_proxy import FlakyProxy
from tests.fake_upstream.server import FakeUpstream
from tests.synthetic_reports import make_qeeg_pdf

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "browser"
USER, PASSWORD = "clinician", "browser-pass-123"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    # Latency per call, so the stages visibly take turns on the page: the run starts before the test goes
    # back and forward and signs a second browser in through a proxy, which under load took longer than a
    # whole run at 0.6 s a call (the watch began at Stage 5 and saw 3 states).
    fake = FakeUpstream(default_latency=1.5).start()
    yield fake
    fake.stop()


@pytest.fixture
def app_env() -> dict[str, str]:
    """Settings the app under test gets on top of app_environ's (a test module may override this)."""
    return {}


@pytest.fixture
def app_environ(tmp_path: Path, upstream: FakeUpstream, app_env: dict[str, str]) -> dict[str, str]:
    """The environment of the app under test and of any `manage.py` command run beside it."""
    data = tmp_path / "app-data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    return env | {
        "QEEG_DATA_DIR": str(data),
        "CLIPROXY_BASE_URL": upstream.base_url,
        "CLIPROXY_API_KEY": "",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        "RUN_HEARTBEAT_SECONDS": "1",
        **app_env,
    }


@pytest.fixture
def app_url(app_environ: dict[str, str]) -> Iterator[str]:
    env, data = app_environ, Path(app_environ["QEEG_DATA_DIR"])
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--verbosity", "0"], env=env, cwd=ROOT, check=True)
    subprocess.run(
        [*manage, "createsuperuser", "--noinput", "--username", USER, "--email", "c@example.org"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = _free_port()
    log = open(data / "serve.log", "wb")  # noqa: SIM115 — closed after the server stops
    server = subprocess.Popen(
        [*manage, "serve", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/login/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the app did not start:\n" + (data / "serve.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        for path in sorted((data / "logs").glob("*.log")) if (data / "logs").exists() else []:
            # Shown by pytest only when the test failed: what the launched processes said.
            print(f"--- {path.name}\n{path.read_text()[-2000:]}")


@pytest.fixture
def browser(app_url: str):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def sign_in(page, app_url: str) -> None:
    page.goto(f"{app_url}/login/")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{app_url}/")


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def upload_reports(page, files: list[str], *, seconds: float = 180) -> None:
    """Upload `files` on the patient page in one form and wait until every one of them is read."""
    page.set_input_files("input[name=files]", files)
    page.click("form[enctype='multipart/form-data'] button[type=submit]")
    deadline = time.monotonic() + seconds
    while page.locator("#reports .badge.ready").count() < len(files):
        assert time.monotonic() < deadline, "the reports were not read in time"
        page.wait_for_timeout(500)


def stage_states(page) -> str:
    return page.evaluate(
        "() => [...document.querySelectorAll('.stage-card')].map(e => e.dataset.state + ':' +"
        " e.querySelector('.stage-count span').textContent).join(' | ')"
    )


def test_clinician_runs_the_council_live_and_exports_a_draft(
    page, browser, app_url: str, tmp_path: Path
) -> None:
    csp_violations = watch_csp(page.context)
    # Sign in.
    page.goto(f"{app_url}/login/")
    shot(page, "01-sign-in")
    sign_in(page, app_url)

    # Create a patient.
    page.fill("#new-patient input[name=label]", "SYNTH-BROWSER-01")
    page.fill("#new-patient input[name=age]", "11")
    page.fill("#new-patient textarea[name=referral_reason]", "attention concerns at school")
    page.click("#new-patient button[type=submit]")
    page.wait_for_url("**/patients/*/")
    assert page.locator("h1").inner_text() == "SYNTH-BROWSER-01"

    # Upload a synthetic qEEG report and wait until it is ready (ingestion runs in its own process).
    pdf = tmp_path / "synthetic-qeeg.pdf"
    make_qeeg_pdf(pdf, pages=2, image_only_pages=(), patient_label="SYNTH-BROWSER-01")
    page.set_input_files("input[name=files]", str(pdf))
    page.click("form[enctype='multipart/form-data'] button[type=submit]")
    page.locator("#reports .badge.ready").wait_for(timeout=90_000)

    # The runs panel offers the ready report and the discovered models; start with the defaults.
    page.locator("#run-wizard").wait_for(timeout=30_000)
    wizard = page.locator("#run-wizard")
    assert wizard.locator("input[name=council_models]:checked").count() == 3
    assert wizard.locator("input[name=reports]:checked").count() == 1
    # A fourth member that votes REVISE, so Stage 5 has required changes to combine.
    wizard.locator("input[name=council_models][value=fake-reviser]").check()
    shot(page, "02-patient-with-wizard")
    wizard.locator("button[type=submit]").click()
    page.wait_for_url("**/runs/*/")
    run_url = page.url
    run_id = run_url.rstrip("/").rsplit("/", 1)[1]

    # Back to the patient page while the run goes on: it is the page as it is now (the browser kept no copy),
    # so its runs panel lists the new run; then forward to the run again.
    page.go_back()
    page.wait_for_url("**/patients/*/")
    page.locator("#runs-panel .runs-table", has_text=f"Run {run_id}").wait_for(timeout=15_000)
    shot(page, "02b-back-to-patient-while-running")
    page.go_forward()
    page.wait_for_url(run_url)

    # A second browser watches the same run through a proxy whose network drops for a while and comes back.
    proxy = FlakyProxy(int(app_url.rsplit(":", 1)[1]))
    proxy_url = f"http://127.0.0.1:{proxy.port}"
    other_context = browser.new_context(viewport={"width": 1360, "height": 900})
    other_csp_violations = watch_csp(other_context)
    other = other_context.new_page()
    sign_in(other, proxy_url)
    other.goto(run_url.replace(app_url, proxy_url))
    other.evaluate(
        "() => { window.__sameDocument = true; window.__streamOpens = 0;"
        " document.body.addEventListener('htmx:sseOpen', () => { window.__streamOpens += 1; });"
        " window.__streamErrors = 0; document.body.addEventListener('htmx:sseError', () => { window.__streamErrors += 1; }); }"
    )
    other_offline = False
    opens_before_cut = -1

    # Watch it live: no reload, the stage cards change as the run's events arrive.
    page.evaluate("() => { window.__sameDocument = true; }")
    seen: list[str] = []
    status = page.locator("#run-status")
    deadline = time.monotonic() + 120
    while status.inner_text() != "Complete":
        states = stage_states(page)
        if not seen or seen[-1] != states:
            seen.append(states)
            if len(seen) == 3:
                shot(page, "03-run-live")
                opens_before_cut = other.evaluate("() => window.__streamOpens")
                proxy.cut()
                other_offline = True
            if len(seen) == 6 and other_offline:
                proxy.restore()
                other_offline = False
        assert time.monotonic() < deadline, f"the run did not complete; last states: {seen[-1:]}"
        assert "Failed" not in status.inner_text() and "Needs" not in status.inner_text(), seen[-1:]
        page.wait_for_timeout(100)
    seen.append(stage_states(page))
    assert page.evaluate("() => window.__sameDocument === true"), "the page reloaded instead of updating live"
    assert len(seen) >= 4, f"expected to see the stages progress, saw: {seen}"
    assert any("running" in states for states in seen), seen
    assert seen[-1].count("done:") == 6, seen[-1]
    assert "4 of 4 models" in seen[-1]
    assert page.locator("#run-body[sse-connect]").count() == 0  # finished: the page stopped listening
    assert "4 of 4 models" in page.locator(".council-line").inner_text()
    shot(page, "04-run-complete")
    # The second browser caught up after its outage and shows the same, without a reload either.
    proxy.restore()
    other.locator("#run-status", has_text="Complete").wait_for(timeout=30_000)
    assert stage_states(other) == seen[-1]
    assert other.evaluate("() => window.__sameDocument === true")
    opens, errors = other.evaluate("() => [window.__streamOpens, window.__streamErrors]")
    # It did lose the stream, and did open it again.
    assert errors >= 1 and opens > opens_before_cut, (opens_before_cut, opens, errors)
    other.context.close()
    proxy.close()

    # Read every stage.
    page.click("#stage-1 .read-link")
    page.wait_for_url("**/stages/1/")
    assert page.locator("article.output").count() == 4
    assert page.locator("article.output .prose table").count() == 4  # markdown tables rendered
    shot(page, "05-stage-1")
    expectations = {
        2: "Ranking across reviewers",
        3: "Stage 3: Revision",
        4: "Select the consolidation for export",
        5: "Required changes, combined",
        6: "Selection and export",
    }
    for number, text in expectations.items():
        page.click(f".stage-tabs a:nth-child({number})")
        page.locator(f"#stage[data-stage='{number}']").wait_for()
        assert text in page.locator("#stage").inner_text(), number
        assert page.url.endswith(f"/stages/{number}/")
        shot(page, f"{4 + number:02d}-stage-{number}")
        if number == 5:
            assert "1 revise" in page.locator(".tally-line").inner_text()
            assert page.locator("ol.changes li").count() >= 1
    # Back from Stage 6 to Stage 5, a URL htmx pushed: htmx keeps no copy of the page, so it asks the server
    # as a history restore and gets the whole page (one top bar, the tabs), never the bare fragment.
    page.go_back()
    page.wait_for_url("**/stages/5/")
    page.locator("#stage[data-stage='5']").wait_for()
    assert page.locator("header.topbar").count() == 1 and page.locator(".stage-tabs").count() == 1
    assert "Required changes, combined" in page.locator("#stage").inner_text()
    shot(page, "09b-back-to-stage-5")
    page.go_forward()
    page.wait_for_url("**/stages/6/")
    page.locator("#stage[data-stage='6']").wait_for()
    assert page.locator("header.topbar").count() == 1
    assert page.locator(".draft").count() == 4
    assert page.locator(".draft .diff-box").count() == 4
    page.locator(".draft .diff-box summary").first.click()
    assert page.locator(".draft pre.diff .d-add").first.is_visible()
    shot(page, "10-stage-6-diff")

    # Select a draft, export, download both files.
    page.locator(".draft .select-draft").first.click()
    page.locator(".draft.selected").wait_for()
    chosen = page.locator(".draft.selected h2 code").inner_text()
    assert chosen in page.locator("#selection").inner_text()
    # Numbers of the draft that match nothing in the fact table are acknowledged one by one first.
    for box in page.locator('#selection input[name="acknowledge"]').all():
        box.check()
    page.click("#export")
    page.locator("#selection .downloads").wait_for()
    shot(page, "11-exported")
    with page.expect_download() as md_download:
        page.click("text=Download Markdown")
    md_path = tmp_path / "final.md"
    md_download.value.save_as(md_path)
    assert md_path.read_text(encoding="utf-8").strip()
    with page.expect_download() as pdf_download:
        page.click("#selection >> text=Download PDF")
    pdf_path = tmp_path / "final.pdf"
    pdf_download.value.save_as(pdf_path)
    assert pdf_path.read_bytes().startswith(b"%PDF")

    # The run page now offers the downloads too.
    page.goto(run_url)
    assert page.locator(".run-head .downloads a").count() == 2
    # Every page and fragment above kept to the Content-Security-Policy (htmx, SSE, the stage readers).
    assert csp_violations == [] and other_csp_violations == [], (csp_violations, other_csp_violations)
