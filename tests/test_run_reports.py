"""A run over several reports of one patient: chosen in the wizard or the API (all the patient's, ready, no
file twice), put on one timeline, and every stage given the reports' texts in timeline order with the
merged, session-mapped fact table, every date a day after the timeline's first session; drafts checked
against the merged table (sessions by timeline number, pages numbered on across the reports). A run made
before runs took several reports keeps working. Reports are generated vendor exports (text layer) of one
patient's visits, read by the real ingestion: the first prints visits 1-3, the second visits 3-5."""

from __future__ import annotations

import importlib
import json
import re
from datetime import date
from pathlib import Path

import pytest

from council import numbers
from patients.models import Patient, PatientIdentifier, Report
from patients.selectors import report_facts
from runs import reading, selectors, services, sources
from runs.models import Run, RunReport
from tests.run_helpers import CONSOLIDATOR, COUNCIL, add_artifact, run_pipeline_here, upload_and_read
from tests.synthetic_vendor import Sessions, make_vendor_pdf, patient_history

LABEL = "SYNTH-TL-01"
PAGES = [("wavi_summary", "text"), ("generic_rows", "text")]
HISTORY = patient_history(seed=5, count=5)
DAYS = [(d - HISTORY[0]).days for d in HISTORY]


def vendor_report(patient: Patient, folder: Path, visits: list[date], *, seed: int, name: str) -> Report:
    """A vendor export of three of the patient's visits, uploaded and read as a clinician's upload is."""
    path = folder / name
    make_vendor_pdf(path, pages=PAGES, seed=seed, label=LABEL, sessions=Sessions(visits, history=5))
    return upload_and_read(patient, path, content_type="application/pdf")


pytestmark = pytest.mark.django_db


@pytest.fixture
def two_exports(tmp_path):
    patient = Patient.objects.create(label=LABEL, age=40, medications="sertraline since 02/20/2024")
    PatientIdentifier.objects.create(patient=patient, kind=PatientIdentifier.Kind.NAME, value="Jane Okonkwo")
    # Uploaded newest first: the run still reads them in timeline order.
    later = vendor_report(patient, tmp_path, HISTORY[2:5], seed=2, name="visit-5.pdf")
    earlier = vendor_report(patient, tmp_path, HISTORY[0:3], seed=1, name="visit-3.pdf")
    return patient, earlier, later


def _run(patient, *reports) -> Run:
    return services.run_create(
        patient=patient,
        reports=reports,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        available=set(COUNCIL),
    )


def test_a_run_takes_several_reports_in_timeline_order(two_exports):
    patient, earlier, later = two_exports
    run = _run(patient, later, earlier)
    assert run.report_list() == [earlier, later] and run.report == earlier
    assert list(RunReport.objects.filter(run=run).values_list("report_id", "position")) == [
        (earlier.pk, 0),
        (later.pk, 1),
    ]


def test_the_reports_must_be_this_patients_ready_and_distinct(two_exports, tmp_path):
    patient, earlier, _later = two_exports
    other = Patient.objects.create(label="SYNTH-TL-02")
    theirs = Report.objects.create(patient=other, original_name="x.pdf", sha256="2" * 64, status="ready")
    pending = Report.objects.create(patient=patient, original_name="y.pdf", sha256="3" * 64)
    copy = Report.objects.create(
        patient=patient, original_name="again.pdf", sha256=earlier.sha256, status=Report.Status.READY
    )
    for reports, says in [
        ([earlier, theirs], f"Report {theirs.pk} belongs to another patient"),
        ([earlier, pending], f"Report {pending.pk} is not ready"),
        ([earlier, copy], f"Reports {earlier.pk} and {copy.pk} have the same content"),
        ([], "Choose at least one ready report"),
    ]:
        with pytest.raises(services.RunRefused, match=says):
            _run(patient, *reports)
    assert not Run.objects.exists() and not RunReport.objects.exists()


def test_the_api_takes_a_list_of_report_ids(two_exports, api, clinician, fake_upstream):
    patient, earlier, later = two_exports
    body = {"patient_id": patient.pk, "report_ids": [later.pk, earlier.pk]}
    made = api.post("/api/runs", body, content_type="application/json")
    assert made.status_code == 201, made.content
    assert made.json()["report_ids"] == [earlier.pk, later.pk] and made.json()["report_id"] == earlier.pk
    listed = api.get(f"/api/patients/{patient.pk}/runs").json()
    assert listed[0]["report_ids"] == [earlier.pk, later.pk]
    for wrong, says in [
        ({"report_ids": [earlier.pk, 99999]}, "There is no report 99999."),
        ({"report_ids": [earlier.pk, earlier.pk]}, "Each report may be given only once."),
        ({"report_ids": []}, "Choose at least one ready report"),
        ({"report_id": earlier.pk, "report_ids": [later.pk]}, "not both"),
        ({}, "not both"),
    ]:
        refused = api.post("/api/runs", {"patient_id": patient.pk, **wrong}, content_type="application/json")
        assert refused.status_code == 422 and says in refused.json()["detail"], (wrong, refused.content)
    # One report as before.
    one = api.post(
        "/api/runs", {"patient_id": patient.pk, "report_id": later.pk}, content_type="application/json"
    )
    assert one.status_code == 201 and one.json()["report_ids"] == [later.pk]


def test_the_wizard_offers_every_ready_report_to_tick(two_exports, clinician_client, fake_upstream, launched):
    patient, earlier, later = two_exports
    html = clinician_client.get(f"/runs/patients/{patient.pk}/panel/").content.decode()
    assert f'type="checkbox" name="reports" value="{earlier.pk}"' in html
    assert f'type="checkbox" name="reports" value="{later.pk}"' in html
    # Each says which visits it prints, so the clinician sees which reports make one history.
    assert f"3 sessions {HISTORY[0]:%Y-%m-%d} to {HISTORY[2]:%Y-%m-%d}" in html
    assert f"3 sessions {HISTORY[2]:%Y-%m-%d} to {HISTORY[4]:%Y-%m-%d}" in html
    response = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {"reports": [earlier.pk, later.pk], "council_models": ["gpt-5"], "consolidator": "gpt-5"},
        follow=True,
    )
    run = Run.objects.get()
    assert run.report_list() == [earlier, later]
    assert f"Run {run.pk} started over 2 reports on one timeline" in response.content.decode()
    panel = clinician_client.get(f"/runs/patients/{patient.pk}/panel/").content.decode()
    assert f"{earlier.original_name}<br>{later.original_name}" in panel
    # Someone else's report id posted by hand: refused, nothing made.
    refused = clinician_client.post(
        f"/runs/patients/{patient.pk}/start/",
        {"reports": [earlier.pk, 99999], "council_models": ["gpt-5"], "consolidator": "gpt-5"},
        follow=True,
    )
    assert "Choose a ready report" in refused.content.decode() and Run.objects.count() == 1


def test_every_stage_sees_both_reports_on_one_timeline_de_identified(two_exports):
    patient, earlier, later = two_exports
    run = _run(patient, earlier, later)
    source = sources.run_source(run, with_images=False)
    text = source.council_input.report_text
    # The timeline first: visit 3 is report 1's session 3 and report 2's session 1.
    assert "=== TIMELINE: 2 reports of this patient, 5 sessions ===" in text
    assert f"- Session 3 (day {DAYS[2]}): report 1 session 3 = report 2 session 1" in text
    assert f"- Session 5 (day {DAYS[4]}): report 2 session 3" in text
    assert "=== REPORT 2 of 2: pages 3\u20134 of this run; its session 1 is timeline session 3" in text
    assert "=== PAGE 1 / 4 ===" in text and "=== PAGE 3 / 4 ===" in text and "=== PAGE 2 / 2 ===" not in text
    # Every absolute date is a day after the timeline's first session, in both texts and the context.
    assert not re.search(r"\d{2}/\d{2}/\d{4}", text)
    second = text.split("=== REPORT 2 of 2")[1]
    assert f"day {DAYS[2]}" in second and f"day {DAYS[4]}" in second and "day 0" not in second
    days_before = (date(2024, 2, 20) - HISTORY[0]).days
    assert source.context["Medications"] == f"sertraline since day {days_before}"
    # Nothing identifying: the label printed on every page, the recorded name.
    assert LABEL not in text and sources.guard_for_run(run.pk).find(text) is None
    # The fact table is the shared start's, not the report text's: merged, sessions by timeline number,
    # visit 3's reaction time once (report 1's page 1), report 2's page 1 (the run's page 3) adding visits
    # 4 and 5; its dates days from the same day 0.
    assert "FACT TABLE" not in text and "### [p" not in text
    table = source.council_input.fact_table
    assert source.facts.has_table and source.facts.facts == len(selectors.fact_table(run)["facts"])
    assert not re.search(r"\d{2}/\d{2}/\d{4}", table) and f"day {DAYS[4]}" in table
    assert sources.guard_for_run(run.pk).find(table) is None and LABEL not in table
    first_page = table.split("### [p1]")[1].split("### [p")[0]
    third_page = table.split("### [p3]")[1].split("### [p")[0]

    def header_of(page: str, measurement: str) -> str:
        tables = page.split("\n\n")
        return next(t for t in tables if f"| {measurement} |" in t).splitlines()[0]

    rt = "Reaction Time (Performance)"
    assert "| Session 1 | Session 2 | Session 3 |" in header_of(first_page, rt)
    assert "| Session 4 | Session 5 |" in header_of(third_page, rt)
    assert "Session 3" not in header_of(third_page, rt)
    # The shared start is the same for every stage: the first call's prefix holds the table.
    assert (
        source.council_input.fact_table in sources.run_source(run, with_images=False).council_input.fact_table
    )


def test_a_multi_report_run_records_the_merged_table_it_was_given(two_exports, api):
    patient, earlier, later = two_exports
    run = _run(patient, earlier, later)
    merged = selectors.fact_table(run)
    # Pages, quality rows and missing facts numbered on, like the facts; sessions of missing facts mapped.
    assert [p["page"] for p in merged["pages"]] == [1, 2, 3, 4]
    assert [(p["report_id"], p["report_page"]) for p in merged["pages"]][2] == (later.pk, 1)
    assert merged["lock"] is None
    given = services.run_facts_record(run=run)
    assert given["facts"] == len(merged["facts"]) > len(report_facts(earlier)["facts"])
    assert selectors.facts_given(run)["facts"] == merged["facts"]
    summary = api.get(f"/api/runs/{run.pk}").json()["fact_table"]
    assert summary["facts"] == len(merged["facts"]) and summary["state"] == "unlocked"
    # Locked only when every report's table is: the record keeps what the run started with.
    from patients import services as patient_services

    patient_services.facts_lock(report=earlier)
    assert selectors.fact_table(run)["lock"] is None
    patient_services.facts_lock(report=later)
    assert selectors.fact_table(run)["lock"] is not None and run.facts_given["lock"] is None
    run.refresh_from_db()
    prompt = sources.prompt_facts(run)
    assert prompt.lock is None and prompt.text.startswith("Locked: no.")


@pytest.mark.django_db(transaction=True)
def test_a_run_over_two_reports_completes_and_every_call_carries_both(two_exports, fake_upstream):
    patient, earlier, later = two_exports
    run = _run(patient, earlier, later)
    code, output = run_pipeline_here(run)
    assert code == 0, output
    calls = [call for call in fake_upstream.calls if call.stage is not None]
    assert len(calls) == 16
    guard = sources.guard_for_run(run.pk)
    for call in calls:
        body = json.dumps(call.body, ensure_ascii=False)
        assert "=== TIMELINE: 2 reports" in body and "=== REPORT 2 of 2" in body
        assert "### [p3]" in body and "| Session 4 | Session 5 |" in body  # the merged fact table
        assert guard.find(body) is None and LABEL not in body


def test_drafts_of_a_multi_report_run_are_checked_against_the_merged_table(two_exports, clinician_client):
    patient, earlier, later = two_exports
    run = _run(patient, earlier, later)
    table = selectors.fact_table(run)
    by_session = {f["session"]: f for f in table["facts"] if f["metric"] == "Reaction Time"}
    assert sorted(by_session) == [1, 2, 3, 4, 5]
    fourth = by_session[4]  # report 2's session 2, on report 2's page 1 = the run's page 3
    assert (fourth["report_id"], fourth["report_session"], fourth["page"]) == (later.pk, 2, 3)
    other = next(f["value"] for s, f in by_session.items() if f["value"] != fourth["value"])
    draft = (
        f"Reaction time in session 4 was {fourth['value']} ms [p3].\n\n"
        f"Reaction time in session 4 was {other} ms [p3].\n"
    )
    artifact = add_artifact(run, stage=6, model_id="gpt-5", text=draft)
    checks = selectors.number_checks(artifact, table)
    assert [c.status for c in checks] == ["match", "wrong_session"]
    # Against report 2's own table, the first sentence would be wrong: its session 4 does not exist.
    own = numbers.check(draft, report_facts(later)["facts"])
    assert own[0].status != "match"
    # The citation [p3] links to report 2's page 1.
    html = str(reading.rendered(draft, selectors.run_page_url(run), checks))
    assert f'href="/reports/{later.pk}/pages/1.png"' in html
    assert selectors.run_page_url(run)(9) is None


def test_a_run_made_before_runs_took_several_reports_keeps_working(two_exports):
    patient, earlier, _later = two_exports
    old = Run.objects.create(
        patient=patient, report=earlier, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )
    assert old.report_list() == [earlier]
    assert sources.run_source(old, with_images=False).council_input.report_text == (
        sources.council_source(patient=patient, report=earlier, with_images=False).council_input.report_text
    )
    assert selectors.fact_table(old) == report_facts(earlier)
    # The migration gives every existing run its report's row.
    migration = importlib.import_module("runs.migrations.0010_run_reports")
    from django.apps import apps

    migration.link_existing_reports(apps, None)
    assert list(old.report_links.values_list("report_id", "position")) == [(earlier.pk, 0)]
    assert old.report_list() == [earlier]


def test_a_date_the_council_was_given_as_a_day_is_not_taken_for_a_measurement():
    facts = [{"id": "f1", "page": 1, "metric": "Reaction Time", "site": None, "band": None, "session": 3,
              "value": "312", "number": 312.0, "unit": "ms", "target": "", "norm": ""}]  # fmt: skip
    checks = numbers.check("Session 3 (day 187): reaction time 312 ms [p1]; on day -12 nothing.", facts)
    assert [(c.mention.text, c.status) for c in checks] == [("312 ms", "match")]


def test_the_run_page_and_the_runs_list_name_every_report(two_exports, clinician_client, administrator):
    patient, earlier, later = two_exports
    run = _run(patient, later, earlier)
    page = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert "2 reports on one timeline:" in page
    assert page.index(f'/reports/{earlier.pk}/">visit-3.pdf') < page.index(
        f'/reports/{later.pk}/">visit-5.pdf'
    )
    listed = clinician_client.get("/runs/").content.decode()
    assert "visit-3.pdf<br>visit-5.pdf" in listed
    from tests.conftest import signed_in

    admin = signed_in(administrator).get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "visit-3.pdf" in admin and "visit-5.pdf" in admin


def test_the_export_of_a_run_over_two_reports_names_both_and_their_merged_values(two_exports):
    from runs.exports import export_run

    patient, earlier, later = two_exports
    run = _run(patient, earlier, later)
    table = selectors.fact_table(run)
    fourth = next(f for f in table["facts"] if f["metric"] == "Reaction Time" and f["session"] == 4)
    draft = f"# Final draft\n\nReaction time in session 4 was {fourth['value']} ms [p3].\n"
    paths = export_run(run=run, artifact=add_artifact(run, stage=6, model_id="gpt-5", text=draft))
    md = paths.md_path.read_text(encoding="utf-8")
    assert "Report 1 of 2" in md and "visit-3.pdf" in md and "pages 1\u20132 of the run" in md
    assert "Report 2 of 2" in md and "visit-5.pdf" in md and "pages 3\u20134 of the run" in md
    assert "1 match" in md  # the draft checked against the merged table
    # The appendix: the merged table, visit 3 once, sessions by their timeline number.
    appendix = md.split("Appendix: values read from the report")[1]
    assert len([line for line in appendix.splitlines() if "| Reaction Time |" in line]) == 5
    assert paths.pdf_path.read_bytes().startswith(b"%PDF")


def test_a_run_over_two_reports_recorded_with_its_first_table_alone_gets_the_merged_one(two_exports):
    patient, earlier, later = two_exports
    run = _run(patient, earlier, later)
    first = report_facts(earlier)
    run.facts_given_path.parent.mkdir(parents=True, exist_ok=True)
    run.facts_given_path.write_text(json.dumps(first))
    run.facts_given = {"at": "2026-12-01T12:00:00+00:00", "lock": None, "facts": len(first["facts"])}
    run.save()
    assert sources.prompt_facts(run).facts == len(selectors.fact_table(run)["facts"]) > len(first["facts"])
