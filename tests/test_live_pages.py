"""The clinician's run pages: the wizard on the patient page, the live run page, the stage readers, select and
export — against a real pipeline run over the fake upstream."""

from __future__ import annotations

import re

import pytest

from runs import services
from runs.models import Artifact, Run
from tests.job_helpers import runner_job
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def patient_report(fake_upstream, tmp_path):
    patient = make_patient()
    return patient, make_ready_report(patient, tmp_path)


@pytest.fixture
def finished_run(patient_report):
    patient, report = patient_report
    run = services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    return run


def test_patient_page_loads_the_runs_panel(clinician_client, patient_report):
    patient, _ = patient_report
    page = clinician_client.get(f"/patients/{patient.pk}/").content.decode()
    assert f'hx-get="/runs/patients/{patient.pk}/panel/"' in page


def test_wizard_offers_ready_reports_and_discovered_models_with_unavailable_ones_disabled(
    clinician_client, patient_report, settings
):
    patient, report = patient_report
    settings.COUNCIL_MODELS = [*COUNCIL, "not-listed-model"]
    html = clinician_client.get(f"/runs/patients/{patient.pk}/panel/").content.decode()
    assert f'name="reports" value="{report.pk}"' in html
    for model in COUNCIL:
        assert re.search(rf'value="{re.escape(model)}" checked>', html), model
    assert re.search(r'value="not-listed-model" disabled>', html)
    assert "unavailable</span>" in html and "not offered by CLIProxyAPI right now" in html
    assert 'value="fake-slow">' in html  # discovered, offered, not in the default council
    assert f'<option value="{CONSOLIDATOR}" selected>' in html


def test_wizard_says_when_the_upstream_is_down(clinician_client, patient_report, settings):
    patient, _ = patient_report
    from council.health import forget_cached_health

    settings.CLIPROXY_BASE_URL = "http://127.0.0.1:9"
    forget_cached_health()
    html = clinician_client.get(f"/runs/patients/{patient.pk}/panel/").content.decode()
    assert "CLIProxyAPI is not ready" in html
    assert re.search(r'<button type="submit" class="primary" disabled>Start the council', html)


def test_starting_from_the_wizard_creates_and_launches_the_run(clinician_client, patient_report, launched):
    patient, report = patient_report
    response = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {"report": report.pk, "council_models": ["gpt-5", "gemini-2.5-pro"], "consolidator": "gpt-5"},
    )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.council_models == ["gpt-5", "gemini-2.5-pro"] and run.consolidator == "gpt-5"
    assert run.status == Run.Status.QUEUED
    assert launched == [("runpipeline", str(run.pk))]


def test_wizard_refuses_a_model_the_upstream_does_not_list(clinician_client, patient_report, launched):
    patient, report = patient_report
    response = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {"report": report.pk, "council_models": ["gpt-5", "made-up"], "consolidator": "gpt-5"},
        follow=True,
    )
    assert not Run.objects.exists()
    assert launched == []
    assert "Not offered by CLIProxyAPI right now: made-up" in response.content.decode()


def test_htmx_start_answers_with_a_redirect_header(clinician_client, patient_report, launched):
    patient, report = patient_report
    response = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {"report": report.pk, "council_models": ["gpt-5"], "consolidator": "gpt-5"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200  # django-htmx HttpResponseClientRedirect: htmx follows HX-Redirect
    assert response["HX-Redirect"] == f"/runs/{Run.objects.get().pk}/"


def test_live_page_of_a_running_run_listens_to_its_stream(clinician_client, patient_report):
    patient, report = patient_report
    run = services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, current_stage=1, job=runner_job())
    html = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'sse-connect="/api/runs/{run.pk}/stream"' in html
    assert 'sse-close="end"' in html
    assert "sse:model_finished" in html and "sse:end" in html
    assert html.count('class="stage-card') == 6
    assert "0 of 3 models" in html


def test_live_fragment_for_htmx_is_not_a_full_page(clinician_client, finished_run):
    html = clinician_client.get(
        f"/runs/{finished_run.pk}/live/", headers={"HX-Request": "true"}
    ).content.decode()
    assert "<html" not in html and 'class="stage-card' in html


def test_finished_run_page_shows_counts_and_no_stream(clinician_client, finished_run):
    html = clinician_client.get(f"/runs/{finished_run.pk}/").content.decode()
    assert "sse-connect" not in html
    assert html.count("3 of 3 models") >= 5 and "1 of 1 model" in html  # stage 4: the consolidator
    assert "Final drafts →" in html
    assert 'id="resume"' not in html


def test_needs_auth_run_explains_and_offers_resume(clinician_client, patient_report, launched):
    patient, report = patient_report
    run = services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    services.run_finish(run_id=run.pk, status=Run.Status.NEEDS_AUTH, error="gpt-5: 401 token expired")
    html = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert "CLIProxyAPI needs sign-in." in html and "gpt-5: 401 token expired" in html
    assert 'id="resume"' in html
    response = clinician_client.post(f"/runs/{run.pk}/resume/")
    assert response.status_code == 302
    assert launched == [("runpipeline", str(run.pk))]
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED


def test_stage_one_renders_markdown_and_strips_model_html(clinician_client, finished_run):
    artifact = finished_run.artifacts.get(stage=1, model_id="gpt-5")
    artifact.path.write_text(
        "# Heading\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<script>alert(1)</script>\n"
        '<img src="https://tracker.example/x.png">\n[link](javascript:alert(2)) <b onclick="x()">bold</b>\n'
    )
    html = clinician_client.get(f"/runs/{finished_run.pk}/stages/1/").content.decode()
    assert "<h1>Heading</h1>" in html and "<td>1</td>" in html
    assert "<script>alert(1)" not in html
    assert "tracker.example" not in html
    assert "javascript:alert" not in html and "onclick" not in html
    assert "<b>bold</b>" in html


def test_stage_two_reveals_labels_and_ranks_across_reviewers(clinician_client, finished_run):
    html = clinician_client.get(f"/runs/{finished_run.pk}/stages/2/").content.decode()
    for label, model in finished_run.label_map.items():
        assert f"<strong>{label}</strong> → <code>{model}</code>" in html
    assert "Ranking across reviewers" in html and "Borda" in html
    assert html.count('class="card reviewer') == 3
    assert "Strengths" in html


def test_stage_five_shows_tally_and_combined_changes(clinician_client, finished_run):
    html = clinician_client.get(f"/runs/{finished_run.pk}/stages/5/").content.decode()
    assert "3 approve" in html and "0 revise" in html
    assert "mean quality score" in html
    assert "Required changes, combined" in html


def test_stage_six_compares_drafts_with_diffs_then_select_and_export(clinician_client, finished_run):
    html = clinician_client.get(f"/runs/{finished_run.pk}/stages/6/").content.decode()
    assert html.count('class="card draft') == 3
    assert html.count("Changes against the consolidation") == 3
    assert 'class="d-add"' in html
    draft = finished_run.artifacts.get(stage=6, model_id="gemini-2.5-pro")
    response = clinician_client.post(f"/runs/{finished_run.pk}/select/", {"artifact": draft.pk}, follow=True)
    page = response.content.decode()
    assert "Selected the final draft by gemini-2.5-pro" in page
    finished_run.refresh_from_db()
    assert finished_run.selected_artifact_id == draft.pk
    response = clinician_client.post(f"/runs/{finished_run.pk}/export/", follow=True)
    page = response.content.decode()
    assert "Download Markdown" in page and "Download PDF" in page
    md = clinician_client.get(f"/api/runs/{finished_run.pk}/export/final.md")
    assert md.status_code == 200
    assert b"gemini-2.5-pro" in b"".join(md.streaming_content)


def test_selecting_a_stage_one_artifact_is_refused_with_a_message(clinician_client, finished_run):
    analysis = finished_run.artifacts.get(stage=1, model_id="gpt-5")
    response = clinician_client.post(
        f"/runs/{finished_run.pk}/select/", {"artifact": analysis.pk}, follow=True
    )
    assert "Only a Stage 6 final draft or the Stage 4 consolidation" in response.content.decode()
    finished_run.refresh_from_db()
    assert finished_run.selected_artifact_id is None


def test_a_posted_id_that_is_not_a_number_is_refused_with_a_message(clinician_client, finished_run):
    for artifact in ("x1", "²", "9" * 30):
        response = clinician_client.post(
            f"/runs/{finished_run.pk}/select/", {"artifact": artifact}, follow=True
        )
        assert response.status_code == 200
        assert "Choose a final draft or the consolidation" in response.content.decode()
    patient = finished_run.patient
    response = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {"report": "1 OR 1", "council_models": ["gpt-5"], "consolidator": "gpt-5"},
        follow=True,
    )
    assert response.status_code == 200 and "Choose a ready report" in response.content.decode()
    assert Run.objects.count() == 1


def test_stage_tabs_get_fragments_for_htmx(clinician_client, finished_run):
    html = clinician_client.get(
        f"/runs/{finished_run.pk}/stages/3/", headers={"HX-Request": "true"}
    ).content.decode()
    assert "<html" not in html and 'id="stage"' in html and "Stage 3: Revision" in html


def test_failed_model_error_is_shown_where_it_happened(clinician_client, finished_run):
    Artifact.objects.filter(run=finished_run, stage=3, model_id="gpt-5").update(
        status=Artifact.Status.FAILED, file_path="", error="Upstream 502 after 5 attempts"
    )
    live = clinician_client.get(f"/runs/{finished_run.pk}/").content.decode()
    assert "Upstream 502 after 5 attempts" in live
    stage = clinician_client.get(f"/runs/{finished_run.pk}/stages/3/").content.decode()
    assert "Upstream 502 after 5 attempts" in stage


def test_pages_need_sign_in(outsider, finished_run):
    for url in (f"/runs/{finished_run.pk}/", f"/runs/{finished_run.pk}/stages/6/", "/runs/patients/1/panel/"):
        response = outsider.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
