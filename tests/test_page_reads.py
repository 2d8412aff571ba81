"""What the list and run pages read: each table once, however many rows or stage outputs, and a row of the
patient list rendered again only when something it shows changed (the same HTML as before, escaped)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import OuterRef
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from council.stages import STEPS
from patients import views as patient_views
from patients.models import Patient, Report, fold
from qeeg_site.json_rows import instances, json_rows
from runs import reading, services
from runs.models import CouncilChange, Run, RunEvent
from tests.job_helpers import runner_job
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, make_ready_report, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def _queries(client, url: str) -> tuple[str, list[str]]:
    client.get(url)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return response.content.decode(), [q["sql"] for q in captured.captured_queries]


def test_the_patient_list_shows_each_row_as_it_is_now_and_escaped(clinician_client):
    patient = Patient.objects.create(
        label="<b>Ødegård</b> & co", age=41, sex="female", referral_reason="x" * 80
    )
    Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64, status="ready")
    html, _ = _queries(clinician_client, "/")
    assert "&lt;b&gt;Ødegård&lt;/b&gt; &amp; co" in html and "<b>Ødegård" not in html
    assert f'href="/patients/{patient.pk}/"' in html and "<td>41</td>" in html and "<td>Female</td>" in html
    assert "x" * 59 + "…" in html and "x" * 60 not in html
    assert f'<td class="small muted date">{timezone.localdate(patient.created_at):%Y-%m-%d}</td>' in html

    # What a row shows changes: the row changes, on the next request, however it was changed.
    Patient.objects.filter(pk=patient.pk).update(label="Renamed", age=None)  # no save(), no updated_at
    Report.objects.create(patient=patient, original_name="s.pdf", sha256="1" * 64, status="ready")
    html, _ = _queries(clinician_client, "/")
    assert "Ødegård" not in html and "<strong>Renamed</strong>" in html
    row = html.split("<strong>Renamed</strong>", 1)[1].split("</tr>", 1)[0]
    assert "<td></td>" in row and "<td>2</td>" in row  # no age; two reports


def test_the_patient_list_renders_a_row_once_until_it_changes(clinician_client, monkeypatch):
    for i in range(30):
        Patient.objects.create(label=f"P-{i:03d}")
    rendered = []
    original = patient_views.render_to_string

    def counted(name, context=None, *args, **kwargs):
        if name == "patients/_patient_row.html":
            rendered.append(context["patient"].label)
        return original(name, context, *args, **kwargs)

    monkeypatch.setattr(patient_views, "render_to_string", counted)
    patient_views._patient_row_html.cache_clear()
    first, queries = _queries(clinician_client, "/")
    assert len(rendered) == 30 and len(queries) <= 5  # session, user, permissions, the page, its count
    clinician_client.get("/")
    assert len(rendered) == 30  # nothing rendered again
    Patient.objects.filter(label="P-007").update(notes="not shown in the list")
    Patient.objects.filter(label="P-011").update(age=9)
    assert clinician_client.get("/").content.decode() != first
    assert rendered[30:] == ["P-011"]


@pytest.fixture
def finished_run(fake_upstream, tmp_path):
    patient = make_patient()
    report = make_ready_report(patient, tmp_path)
    run = services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    return run


def test_a_finished_run_page_reads_each_table_once(clinician_client, finished_run):
    html, queries = _queries(clinician_client, f"/runs/{finished_run.pk}/")
    assert "Where the council disagreed" in html or "disagree" in html.lower()
    tables = [q.split(" FROM ", 1)[1].split()[0] for q in queries if q.startswith("SELECT")]
    assert len(tables) == len(set(tables)), tables  # no table read twice
    # session, user (with its permissions), the run (with its patient, report, job, and as JSON its stage
    # events and council changes), its reports, its artifacts (each with whether a write-up was edited from
    # it); no look for dead runners (it is finished).
    assert len(queries) == 5, "\n".join(q[:120] for q in queries)


def test_a_run_page_with_council_changes_and_an_edited_draft_reads_as_many_tables(
    clinician_client, api, finished_run
):
    run = finished_run
    draft = run.artifacts.get(stage=6, model_id=COUNCIL[0])
    answer = api.post(
        f"/api/runs/{run.pk}/select", {"artifact_id": draft.pk}, content_type="application/json"
    )
    assert answer.status_code == 200, answer.content
    answer = api.post(f"/api/runs/{run.pk}/versions", {"text": "# Edited\n"}, content_type="application/json")
    assert answer.status_code in (200, 201), answer.content
    for stage, model in ((3, COUNCIL[1]), (2, COUNCIL[2])):
        CouncilChange.objects.create(
            run=run, kind="drop", stage=stage, model_id=model, summary=f"Stage {stage}: without {model}"
        )
    html, queries = _queries(clinician_client, f"/runs/{run.pk}/")
    assert len(queries) == 5, "\n".join(q[:120] for q in queries)
    # The changes in their order (when made), each as its line says it.
    first, second = CouncilChange.objects.order_by("at", "pk")
    assert html.index(first.line()) < html.index(second.line())
    # The stage cards' times are the events' (the page's JSON read of them is the table's).
    timings = reading.stage_timings(run)
    assert reading.stage_timings(run, reading_rows(run)) == timings and len(timings) == len(STEPS)
    # Asking the edited final draft's model again would discard it: not offered; another model's final draft
    # is.
    edited = clinician_client.get(f"/runs/{run.pk}/changes/", {"stage": 6, "model": COUNCIL[0]})
    other = clinician_client.get(f"/runs/{run.pk}/changes/", {"stage": 6, "model": COUNCIL[1]})
    assert f'action="/runs/{run.pk}/reask/"' not in edited.content.decode()
    assert f'action="/runs/{run.pk}/reask/"' in other.content.decode()


def reading_rows(run: Run) -> list:
    """The stage events as the run page reads them: in the run's own query, as JSON."""
    found = (
        Run.objects.annotate(
            read=json_rows(reading.stage_events(OuterRef("pk")), *reading.STAGE_EVENT_FIELDS)
        )
        .get(pk=run.pk)
        .read
    )
    return instances(RunEvent, found, *reading.STAGE_EVENT_FIELDS)


def test_a_run_page_shows_a_run_whose_runner_went_silent_as_interrupted(
    clinician_client, fake_upstream, tmp_path, settings
):
    settings.RUN_STALE_SECONDS = 1
    patient = make_patient()
    report = make_ready_report(patient, tmp_path)
    run = services.run_create(
        patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, job=runner_job(heartbeat_at=timezone.now() - timedelta(seconds=30))
    )
    html = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'data-status="interrupted"' in html and "went silent" in html


@pytest.mark.parametrize(
    "url",
    ["/api/patients", "/api/patients?q=common", "/api/patients?q=P-0421", "/", "/?q=common", "/?q=P-0421"],
)
def test_a_list_reads_as_many_queries_whatever_its_page_size(clinician, clinician_client, api, url):
    patients = [
        Patient(label=(label := f"P-{i:05d}"), label_folded=fold(label), notes="a common word" * (i % 2))
        for i in range(150)
    ]
    Patient.objects.bulk_create(patients)
    clinician.assigned_patients.add(*Patient.objects.all())  # in this clinician's reach
    counts = set()
    for size in (10, 50, 100):
        client = api if url.startswith("/api/") else clinician_client
        target = f"{url}{'&' if '?' in url else '?'}page_size={size}" if url.startswith("/api/") else url
        _, queries = _queries(client, target)
        counts.add(len(queries))
    # The API: the token (its user and permissions with it), the count, the page. A page: the session, the
    # user (permissions with it), the rows; a search also asks the search index how many it finds.
    assert counts == {4 if url.startswith("/?q=") else 3}, url
