"""Runs that never dead-end, end to end against the fake upstream (a real runner, in this process): a model
that fails Stage 1 with a 500 rejoins, is asked again or is replaced; a model whose provider needs sign-in (a
run that stops the same way at every resume) is gone on without. Each change says what it redoes before it
is made, is recorded (run page, API, export, audit trail) and keeps every answer it does not have to redo."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from council.stages import STEPS
from runs import selectors, services
from runs.models import Artifact, CouncilChange, Run
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)

GEMINI = "gemini-2.5-pro"
OTHERS = ["gpt-5", "claude-sonnet-4-5"]


def calls(fake, model: str) -> dict[int, int]:
    return {stage: fake.count(model=model, stage=stage) for stage in STEPS.numbers}


def ok_stages(run: Run, model: str) -> list[int]:
    return sorted(
        run.artifacts.filter(model_id=model, status=Artifact.Status.OK).values_list("stage", flat=True)
    )


@pytest.fixture
def gemini_failed_stage_1(run, fake_upstream) -> Run:
    """A complete 2-of-3 run: gemini-2.5-pro's Stage 1 call got a 500 (never retried)."""
    fake_upstream.script(GEMINI, failures=["500"])
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert run.artifacts.get(stage=1, model_id=GEMINI).status == Artifact.Status.FAILED
    assert ok_stages(run, GEMINI) == []
    return run


def test_a_model_that_failed_stage_1_rejoins_and_the_others_are_kept(
    api, gemini_failed_stage_1, fake_upstream, launched
):
    run = gemini_failed_stage_1
    others_before = {m: calls(fake_upstream, m) for m in OTHERS}
    preview = api.post(
        f"/api/runs/{run.pk}/rejoin", {"model": GEMINI, "dry_run": True}, content_type="application/json"
    )
    assert preview.status_code == 200, preview.content
    assert preview.json()["plan"]["catch_up_stages"] == [1, 2, 3, 5, 6]
    assert "asked its missing answers in Stages 1, 2, 3, 5 and 6 first" in preview.json()["detail"]
    assert not CouncilChange.objects.exists() and not launched  # a dry run changes nothing

    answer = api.post(
        f"/api/runs/{run.pk}/rejoin",
        {"model": GEMINI, "reason": "provider is back"},
        content_type="application/json",
    )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["done"] and body["started"] and body["run"]["status"] == "queued"
    assert body["run"]["catch_up"] == [GEMINI] and launched == [("runpipeline", str(run.pk))]

    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert run.catch_up == [] and ok_stages(run, GEMINI) == [1, 2, 3, 5, 6]
    # Its missing answers were asked once each; nobody else was asked anything again.
    assert calls(fake_upstream, GEMINI) == {1: 2, 2: 1, 3: 1, 4: 0, 5: 1, 6: 1}
    assert {m: calls(fake_upstream, m) for m in OTHERS} == others_before
    # It reviewed both other analyses; the others' reviews (kept) never saw its analysis.
    assert len(selectors.artifact_parsed(run.artifacts.get(stage=2, model_id=GEMINI)).reviews) == 2
    for model in OTHERS:
        assert len(selectors.artifact_parsed(run.artifacts.get(stage=2, model_id=model)).reviews) == 1

    detail = api.get(f"/api/runs/{run.pk}").json()
    assert detail["council_summary"] == "3 of 3 models"
    [change] = detail["council_changes"]
    assert change["change"] == "rejoin" and change["stage"] == 1 and change["reason"] == "provider is back"
    assert AuditEvent.objects.filter(action="run.model_rejoined", object_id=str(run.pk)).count() == 1


def test_asking_a_failed_stage_1_answer_again_redoes_every_stage_that_read_stage_1(
    api, gemini_failed_stage_1, fake_upstream, launched
):
    run = gemini_failed_stage_1
    stage_1_before = {m: fake_upstream.count(model=m, stage=1) for m in OTHERS}
    later = run.artifacts.filter(stage__gt=1).count()
    preview = api.post(
        f"/api/runs/{run.pk}/reask",
        {"model": GEMINI, "stage": 1, "dry_run": True},
        content_type="application/json",
    ).json()
    assert preview["plan"]["redone_stages"] == [2, 3, 4, 5, 6]
    assert preview["plan"]["discarded"] == later + 1
    assert "Stages 2 to 6 read it, so they are redone for every model" in preview["detail"]

    answer = api.post(
        f"/api/runs/{run.pk}/reask", {"model": GEMINI, "stage": 1}, content_type="application/json"
    )
    assert answer.status_code == 202, answer.content
    run.refresh_from_db()
    assert run.stages_done == 0 and not run.artifacts.filter(stage__gt=1).exists()
    assert run.artifacts.filter(stage=1, status=Artifact.Status.OK).count() == 2  # the others' analyses kept

    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert {m: fake_upstream.count(model=m, stage=1) for m in OTHERS} == stage_1_before
    assert fake_upstream.count(model=GEMINI, stage=1) == 2
    for model in COUNCIL:
        assert ok_stages(run, model) == [1, 2, 3, 5, 6] or (
            model == CONSOLIDATOR and ok_stages(run, model) == STEPS.numbers
        )
    # Every review now covers the two other analyses, gemini's included.
    for review in run.artifacts.filter(stage=2):
        assert len(selectors.artifact_parsed(review).reviews) == 2
    assert AuditEvent.objects.filter(action="run.model_reasked").count() == 1


def test_another_model_takes_a_failed_models_place_with_a_label_of_its_own(
    api, gemini_failed_stage_1, fake_upstream, launched
):
    run = gemini_failed_stage_1
    labels_before = dict(run.label_map)
    gemini_label = selectors.labels_by_model(run)[GEMINI]
    answer = api.post(
        f"/api/runs/{run.pk}/replace",
        {"model": GEMINI, "stage": 1, "replacement": "fake-reviser", "reason": "500s from Google"},
        content_type="application/json",
    )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert "Put fake-reviser in gemini-2.5-pro's place from Stage 1" in body["detail"]
    run.refresh_from_db()
    # Labels are never reused: the newcomer gets the next letter, every earlier label still means its model.
    assert run.label_map == {**labels_before, "D": "fake-reviser"}
    assert run.dropped == {GEMINI: 1} and run.council_models == [*COUNCIL, "fake-reviser"]

    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert ok_stages(run, "fake-reviser") == [1, 2, 3, 5, 6]
    assert calls(fake_upstream, GEMINI) == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0}  # never asked again
    # Stage 2 reviewers saw the analyses under their labels: gemini's label appears nowhere.
    for review in run.artifacts.filter(stage=2):
        labels = {r.analysis_label for r in selectors.artifact_parsed(review).reviews}
        assert gemini_label not in labels and len(labels) == 2
    assert "D" in {
        r.analysis_label
        for r in selectors.artifact_parsed(run.artifacts.get(stage=2, model_id="gpt-5")).reviews
    }

    detail = api.get(f"/api/runs/{run.pk}").json()
    assert detail["council_summary"].startswith("3 of 4 models (gemini-2.5-pro failed Stage 1:")
    assert detail["council_summary"].endswith("gemini-2.5-pro left out from Stage 1)")
    stage1 = {m["model_id"]: m["status"] for m in detail["stages"][0]["models"]}
    assert stage1 == {"gpt-5": "ok", "claude-sonnet-4-5": "ok", GEMINI: "failed", "fake-reviser": "ok"}
    stage3 = {m["model_id"]: m["status"] for m in detail["stages"][2]["models"]}
    # It had no analysis to revise: later stages never counted it, before or after the change.
    assert GEMINI not in stage3 and detail["stages"][2]["summary"] == "3 of 3 models"

    artifact = run.artifacts.get(stage=6, model_id="fake-reviser")
    api.post(f"/api/runs/{run.pk}/select", {"artifact_id": artifact.pk}, content_type="application/json")
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
    final = (run.exports_dir / "final.md").read_text()
    assert "| Council change | Put fake-reviser in gemini-2.5-pro's place from Stage 1" in final
    assert "500s from Google" in final


def test_going_on_without_a_model_whose_provider_needs_sign_in(api, fake_upstream, launched, tmp_path):
    patient = make_patient()
    report = make_ready_report(patient, tmp_path)
    council = ["gpt-5", "claude-sonnet-4-5", "fake-needs-auth"]
    run = services.run_create(
        patient=patient,
        report=report,
        council_models=council,
        consolidator=CONSOLIDATOR,
        available=set(council),
    )
    # The dead end: every start stops the whole run the same way.
    for _ in range(2):
        code, _ = run_pipeline_here(run)
        run.refresh_from_db()
        assert code == 1 and run.status == Run.Status.NEEDS_AUTH and run.stages_done == 0
    refused = api.post(
        f"/api/runs/{run.pk}/drop", {"model": "fake-needs-auth"}, content_type="application/json"
    )
    assert refused.status_code == 422 and "Say why" in refused.json()["detail"]
    answer = api.post(
        f"/api/runs/{run.pk}/drop",
        {"model": "fake-needs-auth", "reason": "its subscription lapsed"},
        content_type="application/json",
    )
    assert answer.status_code == 202, answer.content
    assert answer.json()["detail"].startswith("Continue without fake-needs-auth from Stage 1 (Analysis)")
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert not run.artifacts.filter(model_id="fake-needs-auth").exists()
    detail = api.get(f"/api/runs/{run.pk}").json()
    stage1 = detail["stages"][0]
    # Honest: two of three, the third counted and named as left out, never "2 of 2".
    assert stage1["summary"] == "2 of 3 models" and stage1["dropped"] == 1 and stage1["state"] == "partial"
    assert detail["council_summary"] == "2 of 3 models (fake-needs-auth left out from Stage 1)"
    [listed] = api.get(f"/api/patients/{patient.pk}/runs").json()
    assert listed["council_summary"] == detail["council_summary"] and listed["elapsed_seconds"] > 0
    [change] = detail["council_changes"]
    assert change["by"] and change["reason"] == "its subscription lapsed"
    assert AuditEvent.objects.filter(action="run.model_dropped").count() == 1


def test_impossible_changes_are_refused_in_words(api, gemini_failed_stage_1, clinician):
    run = gemini_failed_stage_1

    def post(kind: str, **payload):
        return api.post(f"/api/runs/{run.pk}/{kind}", payload, content_type="application/json")

    answer = post("reask", model="gpt-9", stage=1)
    assert answer.status_code == 422 and "gpt-9 has no answer in Stage 1" in answer.json()["detail"]
    answer = post("drop", model=GEMINI, reason="x")
    assert answer.status_code == 409 and "complete" in answer.json()["detail"]
    answer = post("reask", model="gpt-5", stage=9)
    assert answer.status_code == 422 and "Give a stage from 1 to 6" in answer.json()["detail"]
    answer = post("replace", model="gpt-5", stage=4, replacement="fake-reviser")
    assert answer.status_code == 422 and "written by the consolidator" in answer.json()["detail"]
    answer = post("replace", model=GEMINI, stage=1, replacement="gpt-5")
    assert answer.status_code == 422 and "already in this run's council" in answer.json()["detail"]
    answer = post("replace", model=GEMINI, stage=1, replacement="not-offered")
    assert answer.status_code == 422 and "Not offered by CLIProxyAPI" in answer.json()["detail"]
    answer = post("rejoin", model="gpt-5")
    assert answer.status_code == 409 and "nothing to rejoin" in answer.json()["detail"]
    # A draft the clinician edited is never discarded under them.
    draft = run.artifacts.get(stage=6, model_id="gpt-5")
    api.post(f"/api/runs/{run.pk}/select", {"artifact_id": draft.pk}, content_type="application/json")
    api.post(f"/api/runs/{run.pk}/versions", {"text": "# Edited\n"}, content_type="application/json")
    answer = post("reask", model="gpt-5", stage=1)
    assert answer.status_code == 409 and "write-up version 1 (not signed)" in answer.json()["detail"]
    # While it runs, only going on without a model is possible.
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING, current_stage=3)
    from tests.job_helpers import runner_job

    Run.objects.filter(pk=run.pk).update(job=runner_job(target=str(run.pk)))
    answer = post("reask", model="gpt-5", stage=3)
    assert answer.status_code == 409
    assert (
        "asking Stage 3 (Revision) right now" in answer.json()["detail"]
        and "Cancel it" in answer.json()["detail"]
    )
    assert not CouncilChange.objects.exists() and run.artifacts.filter(stage=6).count() == 2


def test_the_run_page_offers_each_change_with_what_it_does_and_makes_it(
    clinician_client, staff_client, gemini_failed_stage_1, fake_upstream, launched
):
    run = gemini_failed_stage_1
    page = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert f'action="/runs/{run.pk}/rejoin/"' in page
    # Each answer's own changes come when its "Ask again or replace…" opens.
    assert f'hx-get="/runs/{run.pk}/changes/?stage=1&amp;model=gemini-2.5-pro"' in page
    page = clinician_client.get(f"/runs/{run.pk}/changes/", {"stage": 1, "model": GEMINI}).content.decode()
    assert f'action="/runs/{run.pk}/reask/"' in page and f'action="/runs/{run.pk}/replace/"' in page
    # The confirmation says what is redone before anything happens.
    assert (
        'hx-confirm="Ask gemini-2.5-pro again in Stage 1 (Analysis); its answer there is discarded. Stages 2 to 6'
        in page
    )
    assert '<option value="fake-reviser">' in page and '<option value="gpt-5">' not in page
    # A role that cannot start runs sees no controls (and the action answers 403).
    assert "council-change" not in staff_client.get(f"/runs/{run.pk}/").content.decode()
    assert staff_client.post(f"/runs/{run.pk}/rejoin/", {"model": GEMINI}).status_code == 403

    answer = clinician_client.post(
        f"/runs/{run.pk}/rejoin/", {"model": GEMINI, "reason": "back"}, headers={"HX-Request": "true"}
    )
    assert answer.status_code == 200 and answer["HX-Redirect"] == f"/runs/{run.pk}/"
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and run.catch_up == [GEMINI]
    page = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert "gemini-2.5-pro rejoins the council" in page  # the message, then the history
    assert "Council changes" in page
    # Refused changes come back as the reason, nothing changed.
    answer = clinician_client.post(f"/runs/{run.pk}/reask/", {"model": "gpt-5", "stage": "1"}, follow=True)
    assert "waiting for its runner" in answer.content.decode()
    assert CouncilChange.objects.count() == 1


def test_a_consolidator_that_keeps_failing_is_replaced_in_its_own_stage(api, run, fake_upstream, launched):
    # Stages 1-3 each make one call of the consolidator (a council member too); its consolidation fails.
    fake_upstream.script(CONSOLIDATOR, failures=["sleep:0"] * 3 + ["model_not_found"] * 2)
    for _ in range(2):  # the dead end: starting again fails the same way
        code, _ = run_pipeline_here(run)
        run.refresh_from_db()
        assert code == 1 and run.status == Run.Status.FAILED and run.stages_done == 3
    fake_upstream.script(CONSOLIDATOR, failures=[])
    before = {stage: fake_upstream.count(stage=stage) for stage in (1, 2, 3)}
    answer = api.post(
        f"/api/runs/{run.pk}/replace",
        {"model": CONSOLIDATOR, "stage": 4, "replacement": "gpt-5", "reason": "keeps failing"},
        content_type="application/json",
    )
    assert answer.status_code == 202, answer.content
    assert answer.json()["detail"].startswith(
        "gpt-5 writes Stage 4 (consolidation) instead of claude-sonnet-4-5"
    )
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert run.consolidator == "gpt-5" and run.council_models == COUNCIL and run.dropped == {}
    assert run.artifacts.get(stage=4, model_id="gpt-5").status == Artifact.Status.OK
    # The failed consolidation stays on the record; nothing before Stage 4 was asked again.
    assert run.artifacts.get(stage=4, model_id=CONSOLIDATOR).status == Artifact.Status.FAILED
    assert {stage: fake_upstream.count(stage=stage) for stage in (1, 2, 3)} == before


def test_asking_a_final_draft_again_keeps_every_other_answer(api, run, fake_upstream, launched):
    assert run_pipeline_here(run)[0] == 0
    kept = {a.pk: a.sha256 for a in run.artifacts.exclude(stage=6, model_id="gpt-5")}
    answer = api.post(
        f"/api/runs/{run.pk}/reask", {"model": "gpt-5", "stage": 6}, content_type="application/json"
    )
    assert answer.status_code == 202, answer.content
    assert "Nothing later reads it; every other answer is kept." in answer.json()["detail"]
    assert answer.json()["plan"]["discarded"] == 1 and answer.json()["plan"]["redone_stages"] == []
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert fake_upstream.count(model="gpt-5", stage=6) == 2 and fake_upstream.count(stage=5) == 3
    assert {a.pk: a.sha256 for a in run.artifacts.exclude(stage=6, model_id="gpt-5")} == kept


def test_a_running_run_offers_only_going_on_without_a_model(clinician_client, gemini_failed_stage_1):
    from tests.job_helpers import runner_job

    run = gemini_failed_stage_1
    run.artifacts.filter(stage__gte=3).delete()
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, current_stage=3, stages_done=2, job=runner_job(target=str(run.pk))
    )
    page = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert page.count('data-change="drop"') == 3 and "Continue without gpt-5 from Stage 3" in page
    assert "its call in flight is abandoned" in page
    assert 'data-change="reask"' not in page and 'data-change="replace"' not in page
