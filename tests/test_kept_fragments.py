"""The pages' kept fragments (rendered once per state of what they show, in this process's memory) never show
what another request's state would: their links follow the prefix the site is served under, and a kept
fragment holds no more than its key and its HTML."""

from __future__ import annotations

import gc
import re
import weakref

import pytest
from django.urls import set_script_prefix

from patients import views as patient_views
from patients.models import Patient
from runs import views as run_views
from tests.test_run_page_cards import finished_run  # noqa: F401 (the fixture: a run the pipeline finished)

pytestmark = pytest.mark.django_db(transaction=True)


def _row_links(html: str) -> list[str]:
    return re.findall(r'<tr>\s*<td><a href="([^"]+)"', html)


def test_the_patient_lists_rows_link_under_the_prefix_of_their_own_request(clinician, clinician_client):
    # One process reached under two prefixes (two proxies, FORCE_SCRIPT_NAME changed under a running
    # worker): a row kept from the first must not send the second's users to the first's paths.
    patient = Patient.objects.create(label="Prefix patient", created_by=clinician)
    patient.clinicians.add(clinician)
    patient_views._patient_row_html.cache_clear()
    try:
        for prefix in ("/one/", "/two/"):
            set_script_prefix(prefix)
            response = clinician_client.get("/")
            assert response.status_code == 200
            assert _row_links(response.content.decode()) == [f"{prefix}patients/{patient.pk}/"]
    finally:
        set_script_prefix("/")


def _page_run(rf, user, pk: int):
    request = rf.get(f"/runs/{pk}/")
    request.user = user
    return run_views._run(request, pk, page=True)


def test_the_kept_disagreement_summary_holds_no_run(rf, clinician, finished_run):  # noqa: F811
    # Every finished run's page read keeps its summary; the entry must not keep the run read for that page
    # (and with it the patient, the reports, every artifact and event row) for the life of the process.
    run_views._disagreement_kept.cache_clear()
    pk = finished_run.pk
    del finished_run  # only the page's own read of the run is left to keep
    run = _page_run(rf, clinician, pk)
    artifacts = run_views.selectors.run_artifacts(run)
    html = run_views._disagreement_html(run, run_views._frozen(run_views._fields(run, artifacts)))
    assert "Where the council disagreed" in html
    gone, patient = weakref.ref(run), weakref.ref(run.patient)
    del run, artifacts
    gc.collect()
    assert gone() is None and patient() is None
    # Kept all the same: a second page of the same run reads nothing again.
    again = _page_run(rf, clinician, pk)
    fields = run_views._frozen(run_views._fields(again, run_views.selectors.run_artifacts(again)))
    assert run_views._disagreement_html(again, fields) == html
    assert run_views._disagreement_kept.cache_info().hits == 1


def test_a_kept_stage_card_and_summary_link_under_their_own_requests_prefix(
    clinician_client,
    finished_run,  # noqa: F811
):
    run_views._stage_card_html.cache_clear()
    run_views._disagreement_kept.cache_clear()
    try:
        for prefix in ("/one/", "/two/"):
            set_script_prefix(prefix)
            html = clinician_client.get(f"/runs/{finished_run.pk}/").content.decode()
            links = re.findall(r'href="([^"]*/runs/\d+/stages/\d+/)"', html)
            assert links and all(link.startswith(f"{prefix}runs/") for link in links), links
    finally:
        set_script_prefix("/")
