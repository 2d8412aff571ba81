"""Every stage's prompt carries the run's fact table as the authoritative numbers, in the shared start (the
same bytes in every call), de-identified through runs.sources like the report: an identifier planted in a
fact's label and value never leaves, session dates read as the report's `day N`. The table is the one the
run was given when it first started: a correction afterwards changes the number check, not the prompts. A
run started on an unlocked table says so on its page, in its API detail and in its export."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from council.deid import fold
from patients import facts
from patients import services as patient_services
from patients.models import Patient, PatientIdentifier, Report
from runs import services, sources
from runs.models import Run
from tests.fake_upstream.replies import message_text
from tests.run_helpers import CONSOLIDATOR, COUNCIL, run_pipeline_here
from tests.synthetic_vendor import make_vendor_pdf

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "Hedwig Quarrington-Szabo"
MRN = "MRN-8841207"


def _vendor_report(tmp_path: Path, clinician, launched) -> tuple[Report, dict]:
    """A WAVi-like summary and a generic page (text layer), read by the real ingestion, with the patient's
    name planted in one fact's label and the record number in another's value, as a misread header would."""
    patient = Patient.objects.create(label="SYNTH-FT", age=30)
    PatientIdentifier.objects.create(patient=patient, kind=PatientIdentifier.Kind.NAME, value=NAME)
    PatientIdentifier.objects.create(patient=patient, kind=PatientIdentifier.Kind.RECORD_NUMBER, value=MRN)
    truth = make_vendor_pdf(
        tmp_path / "v.pdf", pages=[("wavi_summary", "text"), ("generic_rows", "text")], seed=3
    )
    upload = SimpleUploadedFile("v.pdf", (tmp_path / "v.pdf").read_bytes(), content_type="application/pdf")
    [report] = patient_services.report_upload(patient=patient, files=[upload])
    report = patient_services.report_ingest(report_id=report.pk)
    assert report is not None and report.status == Report.Status.READY, report and report.error
    table = facts.load_table(report.folder)
    rows = table["facts"]
    for label in (f for f in rows if f["metric"] == "Digit Span Forward"):
        label["section"] = f"Cognition of {NAME.upper()}"
    value = next(f for f in rows if f["metric"] == "Errors")
    value["metric"], value["value"], value["number"] = "Record", MRN, None
    facts.write_table(report.folder, table)
    return report, truth


def _run(report: Report) -> Run:
    return services.run_create(
        patient=report.patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
    )


def _fact_part(user: str) -> str:
    return user[user.index("## Fact table (authoritative numbers)") : user.index("## Source report")]


def test_every_call_carries_the_deidentified_fact_table_in_the_shared_start(
    fake_upstream, tmp_path, clinician, launched
):
    report, truth = _vendor_report(tmp_path, clinician, launched)
    run = _run(report)
    code, output = run_pipeline_here(run)
    assert code == 0, output
    calls = [c for c in fake_upstream.calls if c.stage is not None]
    assert {c.stage for c in calls} == {1, 2, 3, 4, 5, 6}
    parts = {_fact_part(message_text(c.body["messages"][1])) for c in calls}
    assert len(parts) == 1  # byte for byte the same table in every call of the run
    [table] = parts
    reaction = [t["value"] for t in truth["facts"] if t["metric"] == "Reaction Time"]
    line = next(row for row in table.splitlines() if row.startswith("| Reaction Time ("))
    assert line.split(" | ")[1:5] == [*reaction, "ms"]
    assert "### [p1] read from [text layer]" in table and "### [p2] read from [text layer]" in table
    assert "| Record (Performance) | [ID] |" in table
    assert "Cognition of [NAME]" in table
    # Session dates as the report text gives them: `day N` after its first session, the same in both.
    dates = [t["value"] for t in truth["facts"] if t["metric"] == "Session date"]
    assert not any(d in table for d in dates) and "| Session date | day 0 |" in table
    report_part = message_text(calls[0].body["messages"][1]).split("## Source report", 1)[1]
    day = table.split("| Session date | day 0 | ", 1)[1].split(" |", 1)[0]
    assert day.startswith("day ") and day in report_part
    for call in calls:
        payload = fold(str(call.body))
        assert fold(NAME) not in payload and fold(MRN) not in payload and "SYNTH-FT" not in payload
    assert "Locked: no." in table


def test_a_run_remembers_the_table_it_was_given_and_says_it_was_unlocked(
    fake_upstream, tmp_path, clinician, clinician_client, api, launched
):
    report, _ = _vendor_report(tmp_path, clinician, launched)
    run = _run(report)
    assert services.run_facts_record(run=run)["lock"] is None
    given = sources.prompt_facts(run).text
    fact = next(f for f in facts.load_table(report.folder)["facts"] if f["metric"] == "Reaction Time")
    patient_services.fact_correct(report=report, fact_id=fact["id"], value="999", user=clinician)
    patient_services.facts_lock(report=report, user=clinician)
    # The run keeps the table it started with; a run started now would get the corrected, locked one.
    run.refresh_from_db()
    assert sources.prompt_facts(run).text == given
    now = sources.prompt_facts(Run(patient=report.patient, report=report)).text
    assert "999 (corrected; read as" in now and "Locked: yes." in now and "999" not in given
    code, output = run_pipeline_here(run)
    assert code == 0, output
    sent = {_fact_part(message_text(c.body["messages"][1])) for c in fake_upstream.calls if c.stage}
    assert len(sent) == 1 and "Locked: no." in sent.pop()

    unlocked = "Started on an unlocked fact table"
    page = clinician_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert unlocked in page
    detail = api.get(f"/api/runs/{run.pk}").json()["fact_table"]
    assert detail["state"] == "unlocked" and not detail["locked"] and unlocked in detail["sentence"]
    final = run.artifacts.filter(stage=6).first()
    assert (
        api.post(f"/api/runs/{run.pk}/select", {"artifact_id": final.pk}, "application/json").status_code
        == 200
    )
    answer = api.post(f"/api/runs/{run.pk}/export", {}, "application/json")
    if answer.status_code == 409:  # the fake's numbers are flagged: acknowledge them, as a clinician would
        keys = [item["key"] for item in answer.json()["unresolved"]]
        answer = api.post(f"/api/runs/{run.pk}/export", {"acknowledge": keys}, "application/json")
    assert answer.status_code == 200, answer.content
    exported = run.export_path(Run.EXPORT_MARKDOWN).read_text()
    assert unlocked in exported and f"locked by {clinician.username}" in exported  # given, and as it is now


def test_a_run_started_on_a_locked_table_says_who_locked_it(fake_upstream, tmp_path, clinician, launched):
    report, _ = _vendor_report(tmp_path, clinician, launched)
    lock = patient_services.facts_lock(report=report, user=clinician)
    run = _run(report)
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    summary = services.selectors.facts_given_summary(run)
    assert summary["state"] == "locked" and summary["locked_by"] == "clinician"
    assert summary["sentence"] == f"The council was given the fact table locked by clinician at {lock['at']}."
    assert all("Locked: yes." in message_text(c.body["messages"][1]) for c in fake_upstream.calls if c.stage)


def test_the_council_view_shows_the_fact_table_as_sent(tmp_path, clinician, clinician_client, launched):
    report, _ = _vendor_report(tmp_path, clinician, launched)
    page = clinician_client.get(reverse("runs:report_preview", args=[report.pk])).content.decode()
    sent = page.split('<pre class="facts-sent">', 1)[1].split("</pre>", 1)[0]
    assert (
        "Locked: no." in sent and "Cognition of [NAME]" in sent and "| Record (Performance) | [ID] |" in sent
    )
    assert fold(NAME) not in fold(page) and MRN not in page
    assert "<strong>not locked</strong>" in page
