"""Per-person limits on runs: runs in flight and model calls a day, refused 429 with the reason, and the
estimate of calls shown before a start, on the wizard and in the API."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from ledger.models import ModelCall
from qeeg_site.models import ApiToken
from runs import limits, services
from runs.models import CouncilChange, Run
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def patient_report(tmp_path):
    patient = make_patient()
    return patient, make_ready_report(patient, tmp_path)


def _create(api, patient, report, **extra):
    reply = api.post(
        "/api/runs",
        {"patient_id": patient.pk, "report_id": report.pk, **extra},
        content_type="application/json",
    )
    assert reply.status_code == 201, reply.content
    return reply.json()


def test_the_estimate_is_one_call_per_taker_of_every_step():
    # Six steps: five by every council member, the consolidation by the consolidator alone.
    assert limits.planned_calls(council=COUNCIL, consolidator=CONSOLIDATOR) == 3 * 5 + 1
    # A council of one has no peers to review: that step is skipped.
    assert limits.planned_calls(council=["gpt-5"], consolidator=CONSOLIDATOR) == 1 * 4 + 1
    assert limits.planned_calls(council=COUNCIL, consolidator=CONSOLIDATOR, after_stage=4) == 6


def test_the_api_shows_the_estimate_before_the_start(api, fake_upstream, patient_report):
    body = _create(api, *patient_report)
    assert body["status"] == "created" and body["estimated_calls"] == 16


def test_runs_in_flight_are_limited_per_person(
    api, fake_upstream, patient_report, launched, settings, administrator
):
    settings.RUNS_MAX_IN_FLIGHT_PER_USER = 2
    first, second, third = (_create(api, *patient_report) for _ in range(3))
    assert api.post(f"/api/runs/{first['id']}/start").status_code == 202
    assert api.post(f"/api/runs/{second['id']}/start").status_code == 202
    refused = api.post(f"/api/runs/{third['id']}/start")
    assert refused.status_code == 429
    assert (
        "2 runs in flight" in refused.json()["detail"]
        and "RUNS_MAX_IN_FLIGHT_PER_USER" in refused.json()["detail"]
    )
    assert Run.objects.get(pk=third["id"]).status == Run.Status.CREATED  # nothing queued, nothing launched
    assert len(launched) == 2
    # Someone else is not held up by the clinician's runs.
    _, token = ApiToken.issue(user=administrator, name="t")
    other = Client(headers={"Authorization": f"Bearer {token}"})
    assert other.post(f"/api/runs/{_create(other, *patient_report)['id']}/start").status_code == 202
    # One finishes: the next may start.
    Run.objects.filter(pk=first["id"]).update(status=Run.Status.COMPLETE)
    assert api.post(f"/api/runs/{third['id']}/start").status_code == 202


def test_model_calls_a_day_are_limited_counting_calls_made_and_to_come(
    api, fake_upstream, patient_report, launched, settings
):
    settings.MODEL_CALLS_PER_USER_PER_DAY = 40
    first, second, third = (_create(api, *patient_report) for _ in range(3))
    assert api.post(f"/api/runs/{first['id']}/start").status_code == 202  # 16 to come
    # The first run made its Stage 1 calls today and is still going: 3 made, 13 to come.
    run = Run.objects.get(pk=first["id"])
    for model in COUNCIL:  # recorded as the runner records each answer, which counts its call
        services.artifact_record(
            run_id=run.pk, stage=1, model_id=model, outcome=services.Outcome(text=f"# {model}")
        )
    Run.objects.filter(pk=run.pk).update(stages_done=1)
    assert api.post(f"/api/runs/{second['id']}/start").status_code == 202  # 3 + 13 + 16 = 32 <= 40
    refused = api.post(f"/api/runs/{third['id']}/start")
    assert refused.status_code == 429
    detail = refused.json()["detail"]
    assert "about 16 model calls, and you have 8 of today's 40 left" in detail
    assert "3 made today, 29 still to come" in detail and "MODEL_CALLS_PER_USER_PER_DAY" in detail
    # A smaller council fits.
    small = _create(api, *patient_report, council_models=["gpt-5"])
    assert small["estimated_calls"] == 5
    assert api.post(f"/api/runs/{small['id']}/start").status_code == 202


def test_the_wizard_shows_the_estimate_and_refuses_without_leaving_a_run(
    clinician_client, fake_upstream, patient_report, launched, settings
):
    patient, report = patient_report
    settings.MODEL_CALLS_PER_USER_PER_DAY = 10
    panel = clinician_client.get(f"/runs/patients/{patient.pk}/panel/").content.decode()
    assert "16 model calls" in panel and "10 of today" in panel
    assert "(5 per council model, 1 by the consolidator)" in panel
    reply = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {"report": report.pk, "council_models": COUNCIL, "consolidator": CONSOLIDATOR},
        follow=True,
    )
    assert "about 16 model calls, and you have 10 of today" in reply.content.decode()
    assert not Run.objects.exists() and launched == []


GEMINI = "gemini-2.5-pro"


def _used(user) -> int:
    return limits.quota(user).used_today


def _change(api, run, kind, **body):
    return api.post(f"/api/runs/{run.pk}/{kind}", body, content_type="application/json")


def test_council_changes_are_estimated_refused_over_quota_and_counted(
    api, clinician_client, run, clinician, fake_upstream, launched, settings
):
    """A council change shows its calls before it is made (dry run, confirmation), is refused 429 past the
    day's quota with nothing changed, and every call it makes counts, also those whose answers a later
    change discards (before, a discarded answer's call no longer counted)."""
    Run.objects.filter(pk=run.pk).update(created_by=clinician)
    fake_upstream.script(GEMINI, failures=["500"])  # gemini fails Stage 1: 2 of 3 models
    assert run_pipeline_here(run)[0] == 0
    made = _used(clinician)
    assert made == run.artifacts.count() == ModelCall.objects.filter(run=run).count()

    # Rejoining asks gemini its 5 missing answers (Stages 1, 2, 3, 5, 6); 4 are left today.
    settings.MODEL_CALLS_PER_USER_PER_DAY = made + 4
    for dry_run in (True, False):
        refused = _change(api, run, "rejoin", model=GEMINI, dry_run=dry_run)
        assert refused.status_code == 429, refused.content
        assert "This change makes about 5 model calls, and you have 4 of today's" in refused.json()["detail"]
    page = clinician_client.post(reverse("runs:rejoin", args=[run.pk]), {"model": GEMINI}, follow=True)
    assert "This change makes about 5 model calls, and you have 4 of today" in page.content.decode()
    assert not CouncilChange.objects.exists() and launched == []
    settings.MODEL_CALLS_PER_USER_PER_DAY = made + 5
    preview = _change(api, run, "rejoin", model=GEMINI, dry_run=True)
    assert preview.status_code == 200, preview.content
    assert (
        preview.json()["plan"]["estimated_calls"] == 5 and "About 5 model calls" in preview.json()["detail"]
    )
    assert _change(api, run, "rejoin", model=GEMINI).status_code == 202
    assert run_pipeline_here(run)[0] == 0
    assert _used(clinician) == made + 5  # the estimate was the count

    # Asking gemini's Stage 1 again discards it and every answer that read Stage 1: none left today.
    answers = run.artifacts.count()
    reask = _change(api, run, "reask", model=GEMINI, stage=1, dry_run=True)
    assert reask.status_code == 429 and "you have 0 of today's" in reask.json()["detail"]
    settings.MODEL_CALLS_PER_USER_PER_DAY = 0  # no limit
    preview = _change(api, run, "reask", model=GEMINI, stage=1, dry_run=True).json()
    redo = preview["plan"]["estimated_calls"]
    assert redo == preview["plan"]["discarded"] > 5
    assert _change(api, run, "reask", model=GEMINI, stage=1).status_code == 202
    assert run_pipeline_here(run)[0] == 0
    assert run.artifacts.count() == answers  # the discarded answers were replaced …
    assert _used(clinician) == made + 5 + redo  # … and both their calls and the new ones count


def test_a_council_change_is_charged_to_whoever_makes_it(
    api, run, clinician, administrator, fake_upstream, launched, settings
):
    Run.objects.filter(pk=run.pk).update(created_by=administrator)
    fake_upstream.script(GEMINI, failures=["500"])
    assert run_pipeline_here(run)[0] == 0
    assert _used(clinician) == 0 and _used(administrator) == run.artifacts.count()
    settings.MODEL_CALLS_PER_USER_PER_DAY = 4  # the clinician's own day: the creator's calls are not theirs
    assert _change(api, run, "rejoin", model=GEMINI).status_code == 429
    settings.MODEL_CALLS_PER_USER_PER_DAY = 5
    assert _change(api, run, "rejoin", model=GEMINI).status_code == 202
    run.refresh_from_db()
    assert run.started_by == clinician
    assert limits.quota(clinician).reserved == 5  # in flight: its calls to come are held for it
    assert run_pipeline_here(run)[0] == 0
    assert _used(clinician) == 5


def test_the_estimate_leaves_out_dropped_models_and_adds_catch_up():
    council = ["a", "b", "c"]
    assert limits.planned_calls(council=council, consolidator="a", dropped={"c": 3}) == 3 + 3 + 2 + 1 + 2 + 2
    run = Run(council_models=council, consolidator="a", stages_done=6, catch_up=["c"], dropped={})
    assert limits.calls_to_come(run, []) == 5  # c's answers in Stages 1, 2, 3, 5, 6
