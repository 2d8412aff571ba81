"""The run API: create (checked against the upstream), start (202, launches a runner, no-op when running),
read progress, list per patient, read artifacts."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs import services
from runs.models import Run
from tests.job_helpers import runner_job
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def patient_report(tmp_path):
    patient = make_patient()
    return patient, make_ready_report(patient, tmp_path)


def _create(api, patient, report, **extra):
    return api.post(
        "/api/runs",
        {"patient_id": patient.pk, "report_id": report.pk, **extra},
        content_type="application/json",
    )


def test_create_uses_the_configured_council_by_default(api, fake_upstream, patient_report):
    patient, report = patient_report
    response = _create(api, patient, report)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "created" and body["council_models"] == COUNCIL
    assert body["consolidator"] == "claude-sonnet-4-5"
    assert sorted(body["label_map"]) == ["A", "B", "C"] and sorted(body["label_map"].values()) == sorted(
        COUNCIL
    )
    assert [s["state"] for s in body["stages"]] == ["pending"] * 6
    assert body["prompt_versions"]["1"] == "stage1_analysis.v3"


def test_create_refuses_a_model_the_upstream_does_not_list(api, fake_upstream, patient_report):
    patient, report = patient_report
    response = _create(api, patient, report, council_models=["gpt-5", "gpt-9-imaginary"])
    assert response.status_code == 422
    assert "gpt-9-imaginary" in response.json()["detail"] and "Discovered models" in response.json()["detail"]
    fake_upstream.remove_model("claude-sonnet-4-5")
    response = _create(api, patient, report, council_models=["gpt-5"])
    assert response.status_code == 422 and "claude-sonnet-4-5" in response.json()["detail"]
    assert not Run.objects.exists()


def test_create_refuses_an_empty_council_instead_of_substituting_the_default(
    api, fake_upstream, patient_report
):
    patient, report = patient_report
    response = _create(api, patient, report, council_models=[])
    assert response.status_code == 422
    assert response.json()["detail"] == "Choose at least one council model."
    assert not Run.objects.exists()


def test_create_refuses_a_report_not_ready_or_of_another_patient(api, fake_upstream, patient_report):
    patient, report = patient_report
    other = make_patient("SYNTH-OTHER")
    response = _create(api, other, report)
    assert response.status_code == 422 and "another patient" in response.json()["detail"]
    report.status = "processing"
    report.save()
    response = _create(api, patient, report)
    assert response.status_code == 422 and "not ready" in response.json()["detail"]


def test_create_says_so_at_once_when_the_upstream_is_unreachable(api, settings, patient_report):
    # Default retry settings: the request holds a web thread, so it must not sit out the model-call backoff.
    settings.CLIPROXY_BASE_URL = "http://127.0.0.1:9"
    patient, report = patient_report
    started = time.monotonic()
    response = _create(api, patient, report)
    assert time.monotonic() - started < 2
    assert response.status_code == 503 and "CLIProxyAPI" in response.json()["detail"]
    assert not Run.objects.exists()


def test_start_answers_202_and_launches_one_runner(api, fake_upstream, patient_report, launched):
    patient, report = patient_report
    run_id = _create(api, patient, report).json()["id"]
    response = api.post(f"/api/runs/{run_id}/start")
    assert response.status_code == 202
    assert response.json()["started"] is True and response.json()["run"]["status"] == "queued"
    assert launched == [("runpipeline", str(run_id))]
    # Queued or running: starting again does nothing and launches nothing.
    assert api.post(f"/api/runs/{run_id}/start").json()["started"] is False
    Run.objects.filter(pk=run_id).update(status="running", job=runner_job())
    response = api.post(f"/api/runs/{run_id}/start")
    assert response.status_code == 202 and response.json()["started"] is False
    assert len(launched) == 1


def test_a_run_started_from_the_api_completes_and_reads_back(api, fake_upstream, patient_report, launched):
    patient, report = patient_report
    run_id = _create(api, patient, report).json()["id"]
    api.post(f"/api/runs/{run_id}/start")
    code, output = run_pipeline_here(int(launched[0][1]))  # what the launched process does
    assert code == 0, output
    body = api.get(f"/api/runs/{run_id}").json()
    assert body["status"] == "complete" and body["council_summary"] == "3 of 3 models"
    assert [s["summary"] for s in body["stages"]] == ["3 of 3 models"] * 3 + ["1 of 1 model"] + [
        "3 of 3 models"
    ] * 2
    assert all(m["label"] for m in body["stages"][1]["models"])
    assert len(body["votes"]) == 3
    assert api.post(f"/api/runs/{run_id}/start").status_code == 409

    listed = api.get(f"/api/patients/{patient.pk}/runs").json()
    assert [r["id"] for r in listed] == [run_id]
    # The list reads plain column values, the detail a model instance: the same summary either way.
    assert {key: body[key] for key in listed[0]} == listed[0]
    assert listed[0]["status_display"] == "Complete" and listed[0]["created_at"].endswith("Z")

    artifacts = api.get(f"/api/runs/{run_id}/artifacts").json()
    assert len(artifacts) == 16
    review = next(a for a in artifacts if a["stage"] == 2)
    detail = api.get(f"/api/runs/{run_id}/artifacts/{review['id']}").json()
    assert detail["data"]["ranking_best_to_worst"] and detail["kind"] == "json"
    draft = next(a for a in artifacts if a["stage"] == 6)
    assert draft["selectable"] and not review["selectable"]
    assert api.get(f"/api/runs/{run_id}/artifacts/{draft['id']}").json()["text"].strip()
    assert api.get(f"/api/runs/{run_id + 1}/artifacts/{draft['id']}").status_code == 404


def test_run_api_needs_a_signed_in_user(outsider, db):
    assert outsider.get("/api/runs/1").status_code == 401
    assert outsider.post("/api/runs/1/start").status_code == 401


def test_unknown_ids_get_readable_answers(api, db):
    assert api.get("/api/runs/999").json() == {"detail": "There is no run 999."}
    assert api.get("/api/patients/999/runs").status_code == 404
    response = api.post("/api/runs", {"patient_id": 999, "report_id": 1}, content_type="application/json")
    assert response.status_code == 422 and "no patient 999" in response.json()["detail"]


def test_listing_a_patients_runs_reads_artifacts_once_for_one_run_or_many(api, patient_report):
    patient, report = patient_report

    def add_run() -> None:
        run = services.run_create(
            patient=patient,
            report=report,
            council_models=COUNCIL,
            consolidator=CONSOLIDATOR,
            available=set(COUNCIL),
        )
        services.artifact_record(
            run_id=run.pk, stage=1, model_id="gpt-5", outcome=services.Outcome(text=None, error="503")
        )

    def artifact_queries() -> int:
        # Only the artifact reads: what authentication writes (token last use) is not this test's business.
        with CaptureQueriesContext(connection) as captured:
            response = api.get(f"/api/patients/{patient.pk}/runs")
        assert response.status_code == 200
        assert all("gpt-5 failed Stage 1: 503" in r["council_summary"] for r in response.json())
        return sum('"runs_artifact"' in query["sql"] for query in captured.captured_queries)

    add_run()
    assert artifact_queries() == 1
    add_run()
    add_run()
    assert artifact_queries() == 1


def _list_queries(api, patient) -> tuple[list[dict], list[str]]:
    api.get(f"/api/patients/{patient.pk}/runs")  # the token's last use is written once a minute, not here
    with CaptureQueriesContext(connection) as captured:
        response = api.get(f"/api/patients/{patient.pk}/runs")
    assert response.status_code == 200
    return response.json(), [query["sql"] for query in captured.captured_queries]


def test_listing_a_patients_runs_takes_two_queries_however_many_runs(api, patient_report):
    patient, report = patient_report
    counts = []
    for runs in (1, 30):
        while Run.objects.filter(patient=patient).count() < runs:
            services.run_create(
                patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR,
                available=set(COUNCIL),
            )  # fmt: skip
        listed, queries = _list_queries(api, patient)
        assert len(listed) == runs
        counts.append(len(queries))
    # The token (its user and permissions read with it); the runs with their reports, Stage 1 outcomes and
    # failures. No look for dead runners: none of them is running or queued.
    assert counts == [2, 2]


def test_a_listed_run_whose_runner_went_silent_is_listed_interrupted(api, patient_report, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.RUN_STALE_SECONDS = 1
    patient, report = patient_report
    run = services.run_create(
        patient=patient,
        report=report,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        available=set(COUNCIL),
    )
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, job=runner_job(heartbeat_at=timezone.now() - timedelta(seconds=30))
    )
    listed, _ = _list_queries(api, patient)
    assert [r["status"] for r in listed] == ["interrupted"]
    assert "went silent" in listed[0]["error"]
