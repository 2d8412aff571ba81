"""htmx on the clinician pages: a fragment only for an htmx request, the whole page for a history restore
(the back button after htmx pushed a URL), `Vary` on every answer that depends on it, and pages the browser
must not keep (so the back button from a running run shows the patient page as it is now)."""

from __future__ import annotations

import pytest
from django.utils.cache import has_vary_header

from patients.models import Patient, Report
from runs.models import Run

HX = {"HX-Request": "true"}
RESTORE = {"HX-Request": "true", "HX-History-Restore-Request": "true", "HX-Current-URL": "http://testserver/"}


@pytest.fixture
def run(db) -> Run:
    patient = Patient.objects.create(label="SYNTH-HX-1", referral_reason="sleep onset")
    report = Report.objects.create(
        patient=patient, original_name="r.pdf", sha256="0" * 64, status=Report.Status.READY, page_count=1
    )
    return Run.objects.create(
        patient=patient,
        report=report,
        council_models=["gpt-5", "claude-sonnet-4-5"],
        consolidator="claude-sonnet-4-5",
        status=Run.Status.COMPLETE,
    )


def pages(run: Run) -> list[tuple[str, str]]:
    """(URL, a mark only its fragment starts with) for every page that answers htmx with a fragment."""
    return [
        ("/?q=HX", '<div id="patient-table">'),
        (f"/reports/{run.report.pk}/", '<div id="report-body"'),
        (f"/runs/{run.pk}/", '<div id="run-body"'),
        (f"/runs/{run.pk}/stages/3/", '<div id="stage"'),
    ]


def is_page(html: str) -> bool:
    return html.lstrip().startswith("<!doctype html>") and '<header class="topbar">' in html


def test_htmx_gets_the_fragment_and_a_browser_the_page_both_saying_they_vary(clinician_client, run):
    for url, fragment_mark in pages(run):
        page = clinician_client.get(url)
        fragment = clinician_client.get(url, headers=HX)
        assert page.status_code == fragment.status_code == 200, url
        assert is_page(page.content.decode()), url
        html = fragment.content.decode()
        assert html.lstrip().startswith(fragment_mark) and not is_page(html), (url, html[:200])
        for response in (page, fragment):
            assert has_vary_header(response, "HX-Request"), (url, response.get("Vary"))
            assert has_vary_header(response, "HX-History-Restore-Request"), url


def test_a_history_restore_gets_the_whole_page_never_a_fragment(clinician_client, run):
    for url, fragment_mark in pages(run):
        response = clinician_client.get(url, headers=RESTORE)
        html = response.content.decode()
        assert response.status_code == 200 and is_page(html), (url, html[:200])
        assert fragment_mark in html  # the page still includes what the fragment would have been
        assert has_vary_header(response, "HX-History-Restore-Request"), url
    # Without HX-Request too (htmx's historyRestoreAsHxRequest off): still the page.
    only_restore = clinician_client.get(f"/runs/{run.pk}/", headers={"HX-History-Restore-Request": "true"})
    assert is_page(only_restore.content.decode())


@pytest.mark.django_db(transaction=True)
async def test_the_async_handler_tells_fragments_and_restores_apart_too(async_client, clinician, run):
    await async_client.aforce_login(clinician)
    fragment = await async_client.get(f"/runs/{run.pk}/", headers=HX)
    restore = await async_client.get(f"/runs/{run.pk}/", headers=RESTORE)
    assert not is_page(fragment.content.decode()) and is_page(restore.content.decode())
    assert has_vary_header(fragment, "HX-Request") and has_vary_header(restore, "HX-Request")


def test_a_page_that_never_asks_does_not_vary_on_htmx(clinician_client, run):
    response = clinician_client.get(f"/patients/{run.patient.pk}/", headers=HX)
    assert response.status_code == 200 and not has_vary_header(response, "HX-Request")


def test_patient_and_run_pages_are_never_kept_by_the_browser(clinician_client, run):
    # What makes the back button from a running run show the patient page as it is now, runs panel included.
    for url in (
        f"/patients/{run.patient.pk}/",
        f"/runs/patients/{run.patient.pk}/panel/",
        f"/runs/{run.pk}/",
    ):
        cache_control = clinician_client.get(url)["Cache-Control"]
        assert "no-store" in cache_control and "no-cache" in cache_control, (url, cache_control)


def test_htmx_keeps_no_copies_of_pages_in_the_browser(clinician_client, run):
    # htmx's history cache would keep patient pages in localStorage and restore them stale: it is off, so a
    # back button to an htmx-pushed URL always asks the server (as a history restore, answered above).
    html = clinician_client.get("/").content.decode()
    assert '"historyCacheSize": 0' in html
