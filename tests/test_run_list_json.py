"""A patient's run list is answered as built, not validated through its schema: the bytes must be what ninja
makes of the same summaries validated as `list[RunSummary]` (key order, times, floats, nulls, escapes)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.test import RequestFactory
from pydantic import TypeAdapter

from council.stages import STEPS
from patients.models import Report
from qeeg_site.api import api as ninja_api
from runs import access, selectors
from runs.api import SUMMARY_FIELDS, RunSummary, _summary_of
from runs.models import Artifact, Run, RunReport
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient

STATUSES = ["created", "queued", "running", "complete", "failed", "cancelled", "interrupted"]
ERRORS = ["", "timed out", 'upstream said "no" — 503 \u00e9\u4e2d', "line one\nline two\t\\ end"]


def _moment(rng: random.Random) -> datetime:
    # Whole seconds and every kind of microsecond (Django's encoder keeps milliseconds, pydantic would not).
    micro = rng.choice([0, 1, 999, 1000, 123456, 999999, rng.randint(0, 999999)])
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 3 * 10**7), microseconds=micro)


def _generated_runs(patient, rng: random.Random) -> None:
    reports = [
        Report.objects.create(
            patient=patient, original_name=f"r{i}.pdf", sha256=f"{i:064x}", status="ready", page_count=3
        )
        for i in range(3)
    ]
    for _ in range(60):
        status = rng.choice(STATUSES)
        council = rng.sample(COUNCIL, rng.randint(1, len(COUNCIL)))
        run = Run.objects.create(
            patient=patient,
            report=rng.choice(reports),
            council_models=council,
            consolidator=CONSOLIDATOR,
            label_map={chr(65 + i): m for i, m in enumerate(council)},
            prompt_versions=STEPS.prompt_versions(),
            status=status,
            current_stage=rng.randint(0, STEPS.last.number),
            stages_done=rng.randint(0, STEPS.last.number),
            error=rng.choice(ERRORS),
            worked_seconds=rng.choice([0.0, 0.05, 12.0, rng.random() * 5000]),
            dropped=rng.choice([{}, {council[-1]: 2}]),
        )
        # Started or not, finished or not; a running run's own runner time left out (it moves with the clock).
        Run.objects.filter(pk=run.pk).update(
            created_at=_moment(rng),
            started_at=None if status == "created" else rng.choice([None, _moment(rng)]),
            finished_at=rng.choice([None, _moment(rng)]),
        )
        if rng.random() < 0.4:  # several reports on one timeline, in an order of their own
            for position, report in enumerate(rng.sample(reports, rng.randint(1, 3))):
                RunReport.objects.create(run=run, report=report, position=position)
        selected = None
        for step in list(STEPS)[: rng.randint(0, STEPS.last.number)]:
            for model in council:
                failed = rng.random() < 0.2
                artifact = Artifact.objects.create(
                    run=run,
                    stage=step.number,
                    model_id=model,
                    kind=step.kind.value,
                    status="failed" if failed else "ok",
                    error=rng.choice(ERRORS[1:]) if failed else "",
                )
                selected = artifact if not failed and rng.random() < 0.1 else selected
        if selected is not None:
            Run.objects.filter(pk=run.pk).update(selected_artifact=selected)


def _as_ninja_validates(user, patient_id: int) -> bytes:
    """The list as the route answered it before: the same summaries through `list[RunSummary]` and back."""
    rows = access.patient_run_rows(user, patient_id, SUMMARY_FIELDS)
    summaries = selectors.council_summaries(
        {row["id"]: row["council_models"] for row in rows}, {row["id"]: row["dropped"] for row in rows}
    )
    reports: dict[int, list[int]] = {}
    for link in RunReport.objects.filter(run_id__in=[row["id"] for row in rows]).order_by(
        "run_id", "position"
    ):
        reports.setdefault(link.run_id, []).append(link.report_id)
    built = [_summary_of(row, summaries[row["id"]], reports.get(row["id"], [])) for row in rows]
    schema = TypeAdapter(list[RunSummary])
    dumped = schema.dump_python(schema.validate_python(built))
    return ninja_api.create_response(RequestFactory().get("/"), dumped, status=200).content


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_run_list_is_byte_for_byte_what_the_schema_would_answer(api, clinician, seed):
    _same_bytes(api, clinician, seed)


def test_the_run_list_is_byte_for_byte_what_the_schema_would_answer_on_postgresql(
    postgres_db, api, clinician
):
    # The run's columns, reports and outcomes come as PostgreSQL's JSON text (its times ISO with a zone).
    _same_bytes(api, clinician, 4)


def _same_bytes(api, clinician, seed: int) -> None:
    patient = make_patient(f"SYNTH-{seed}")
    _generated_runs(patient, random.Random(seed))
    response = api.get(f"/api/patients/{patient.pk}/runs")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    listed = response.json()
    assert len(listed) == 60 and list(listed[0]) == list(RunSummary.model_fields)
    assert any(r["finished_at"] is None for r in listed) and any(r["selected_artifact_id"] for r in listed)
    assert any("." in (r["created_at"] or "") for r in listed)  # some times have milliseconds
    assert response.content == _as_ninja_validates(clinician, patient.pk)


def _finished_run(patient, report) -> Run:
    run = Run.objects.create(
        patient=patient,
        report=report,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        label_map={chr(65 + i): m for i, m in enumerate(COUNCIL)},
        status="complete",
        stages_done=STEPS.last.number,
        current_stage=STEPS.last.number,
        worked_seconds=42.0,
    )
    for model in COUNCIL:
        Artifact.objects.create(run=run, stage=STEPS.first.number, model_id=model, kind="md", status="ok")
    return run


@pytest.mark.django_db(transaction=True)
def test_a_listed_run_changed_in_any_way_its_answer_shows_is_listed_anew(api, clinician):
    """Listed runs' answers are kept (runs.api._listed_run), by everything they are made from: each change
    below is made as a bulk write (no save(), no signal), and each is seen at once."""
    from runs.api import _listed_run

    patient = make_patient("SYNTH-KEPT")
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="a" * 64, status="ready")
    run = _finished_run(patient, report)
    url = f"/api/patients/{patient.pk}/runs"

    def listed() -> dict:
        response = api.get(url)
        assert response.status_code == 200
        assert response.content == _as_ninja_validates(clinician, patient.pk)
        return response.json()[0]

    assert listed()["council_summary"] == "3 of 3 models"
    kept = _listed_run.cache_info().hits
    assert listed()["council_summary"] == "3 of 3 models"
    assert _listed_run.cache_info().hits == kept + 1  # the same run, unchanged: its kept answer

    Artifact.objects.filter(run=run, model_id=COUNCIL[2]).update(status="failed", error="timed out")
    assert listed()["council_summary"] == f"2 of 3 models ({COUNCIL[2]} failed Stage 1: timed out)"
    Artifact.objects.filter(run=run, model_id=COUNCIL[2]).update(error="HTTP 503")
    assert listed()["council_summary"] == f"2 of 3 models ({COUNCIL[2]} failed Stage 1: HTTP 503)"
    Artifact.objects.bulk_create(
        [Artifact(run=run, stage=4, model_id=CONSOLIDATOR, kind="md", status="failed", error="empty")]
    )
    assert listed()["council_summary"] == (
        f"2 of 3 models ({COUNCIL[2]} failed Stage 1: HTTP 503; {CONSOLIDATOR} failed Stage 4: empty)"
    )
    Artifact.objects.filter(run=run, stage=4).delete()
    Run.objects.filter(pk=run.pk).update(dropped={COUNCIL[0]: 5})
    assert listed()["council_summary"] == (
        f"2 of 3 models ({COUNCIL[2]} failed Stage 1: HTTP 503; {COUNCIL[0]} left out from Stage 5)"
    )
    Run.objects.filter(pk=run.pk).update(council_models=COUNCIL[:2], dropped={})
    assert listed()["council_summary"] == f"2 of 2 models ({COUNCIL[2]} failed Stage 1: HTTP 503)"
    second = Report.objects.create(patient=patient, original_name="s.pdf", sha256="b" * 64, status="ready")
    RunReport.objects.bulk_create(
        [RunReport(run=run, report=second, position=1), RunReport(run=run, report=report, position=0)]
    )
    assert listed()["report_ids"] == [report.pk, second.pk]
    RunReport.objects.filter(run=run, report=report).update(position=2)
    assert listed()["report_ids"] == [second.pk, report.pk]
    Run.objects.filter(pk=run.pk).update(status="failed", error="stopped", worked_seconds=43.25)
    answer = listed()
    assert (answer["status"], answer["error"], answer["elapsed_seconds"]) == ("failed", "stopped", 43.2)
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    Run.objects.filter(pk=run.pk).update(finished_at=moment, selected_artifact=Artifact.objects.first())
    answer = listed()
    assert answer["finished_at"] == "2026-03-04T05:06:07.890Z" and answer["selected_artifact_id"]


@pytest.mark.django_db(transaction=True)
def test_a_running_runs_working_time_is_never_kept(api, clinician, monkeypatch):
    from django.utils import timezone

    patient = make_patient("SYNTH-RUNNING")
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="c" * 64, status="ready")
    run = _finished_run(patient, report)
    since = timezone.now()
    Run.objects.filter(pk=run.pk).update(status="running", started_at=since, working_since=since)
    # Its runner is alive: the list does not settle it as interrupted.
    monkeypatch.setattr("runs.services.runs_mark_stale_interrupted", lambda: 0)
    elapsed = []
    for later in (10, 70):
        monkeypatch.setattr(timezone, "now", lambda later=later: since + timedelta(seconds=later))
        response = api.get(f"/api/patients/{patient.pk}/runs")
        elapsed.append(response.json()[0]["elapsed_seconds"])
    assert elapsed == [52.0, 112.0]
