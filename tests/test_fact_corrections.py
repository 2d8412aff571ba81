"""Correcting and locking a report's fact table through the API: the reading is kept beside the correction
(who, when, note), a locked table refuses corrections until unlocked, bad bodies get a 4xx that says what is
wrong, every correction and lock is audited, and the number check reads the corrected value at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.models import AuditEvent
from patients import facts
from patients.models import Patient, Report
from tests.synthetic_drafts import fact_rows
from tests.synthetic_vendor import make_vendor_pdf
from tests.test_number_verification import checked_run  # noqa: F401 (a fixture)

PAGES = [("wavi_summary", "text"), ("generic_rows", "text")]


@pytest.fixture
def report(db, data_dir: Path, tmp_path: Path, clinician) -> Report:
    """A ready report whose fact table is the truth of a generated vendor report, with one disagreement."""
    patient = Patient.objects.create(label="SYNTH-CORR")
    report = Report.objects.create(
        patient=patient, original_name="v.pdf", sha256="2" * 64, page_count=2, status=Report.Status.READY
    )
    rows = fact_rows(make_vendor_pdf(tmp_path / "v.pdf", pages=PAGES, seed=7)["facts"])
    _first, second = _two_readings(rows)
    report.folder.mkdir(parents=True, exist_ok=True)
    table = {"schema": 1, "facts": [*rows, second], "pages": [], "missing": [], "disagreements": 1}
    facts.write_table(report.folder, {**table, "lock": None})
    return report


def _two_readings(rows: list[dict]) -> tuple[dict, dict]:
    first = next(r for r in rows if r["metric"] == "Reaction Time" and r["session"] == 2)
    second = {**first, "id": first["id"] + "|OCR", "source": "OCR", "value": "9" + first["value"]}
    first.update(disagreement=True, disagrees_with=[second["id"]])
    second.update(disagreement=True, disagrees_with=[first["id"]], number=float(second["value"]))
    return first, second


def _fact(report: Report, metric: str, session: int | None = None) -> dict:
    table = facts.load_table(report.folder)
    return next(
        f
        for f in table["facts"]
        if f["metric"] == metric and (session is None or f["session"] == session) and f["source"] != "OCR"
    )


def _correct(client, report: Report, body: dict):
    return client.post(f"/api/reports/{report.pk}/facts/corrections", body, content_type="application/json")


def test_a_correction_keeps_the_reading_and_says_who_and_when(api, report, clinician):
    fact = next(
        f
        for f in facts.load_table(report.folder)["facts"]
        if f["number"] is not None and not f.get("disagrees_with")
    )
    wrong = str(fact["number"] + 10)
    answer = _correct(api, report, {"fact": fact["id"], "value": wrong, "note": "page shows it"})
    assert answer.status_code == 200, answer.content
    stored = next(f for f in facts.load_table(report.folder)["facts"] if f["id"] == fact["id"])
    assert stored["value"] == fact["value"]  # the reading is never overwritten
    correction = stored["correction"]
    assert correction["value"] == wrong and correction["number"] == float(wrong)
    assert correction["by"] == "clinician" and correction["at"] and correction["note"] == "page shows it"
    assert answer.json() == stored
    assert (
        api.get(f"/api/reports/{report.pk}/facts").json()["facts"] == facts.load_table(report.folder)["facts"]
    )
    event = AuditEvent.objects.get(action="fact.corrected")
    assert event.user == clinician and event.patient_id == report.patient_id
    assert event.detail == {"page": fact["page"], "removed": False}
    # The reading itself puts it back as read.
    assert _correct(api, report, {"fact": fact["id"], "value": fact["value"]}).json()["correction"] is None
    assert AuditEvent.objects.filter(action="fact.corrected").count() == 2


def test_a_unit_typed_with_the_value_is_taken_when_it_is_the_facts_own(api, report):
    fact = _fact(report, "Reaction Time", 1)
    assert fact["unit"] == "ms"
    answer = _correct(api, report, {"fact": fact["id"], "value": "412 ms"})
    assert answer.status_code == 200 and answer.json()["correction"]["number"] == 412.0
    refused = _correct(api, report, {"fact": fact["id"], "value": "412 Hz"})
    assert refused.status_code == 422 and "This fact is in ms, not Hz" in refused.json()["detail"]


def test_a_correction_of_a_disputed_value_settles_every_reading_of_it(api, report):
    first = _fact(report, "Reaction Time", 2)
    [partner_id] = first["disagrees_with"]
    answer = _correct(api, report, {"fact": first["id"], "value": first["value"]})
    assert answer.status_code == 200
    table = {f["id"]: f for f in facts.load_table(report.folder)["facts"]}
    assert table[first["id"]]["correction"]["value"] == first["value"]  # confirmed, not "as read"
    assert table[partner_id]["correction"]["value"] == first["value"]
    assert table[partner_id]["value"] != first["value"]  # the other reader's reading stays


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"fact": "no-such-fact", "value": "1"}, 422, "has no fact with id “no-such-fact”"),
        ({"fact": "REACTION", "value": "fast"}, 422, "“fast” is not a number"),
        ({"fact": "REACTION", "value": "   "}, 422, "Enter the value as printed"),
        ({"fact": "REACTION", "value": "1", "note": "x" * 501}, 422, "note"),
        ({"fact": "REACTION"}, 422, "value"),
        ({"value": "1"}, 422, "fact"),
    ],
)
def test_bad_bodies_are_refused_with_what_is_wrong_and_nothing_is_written(api, report, body, status, says):
    if body.get("fact") == "REACTION":
        body = {**body, "fact": _fact(report, "Reaction Time", 1)["id"]}
    before = (report.folder / facts.FACTS_FILE).read_bytes()
    answer = _correct(api, report, body)
    assert answer.status_code == status and says in answer.json()["detail"], answer.content
    assert (report.folder / facts.FACTS_FILE).read_bytes() == before
    assert not AuditEvent.objects.filter(action="fact.corrected").exists()


def test_a_placeholder_is_a_value_a_numeric_fact_may_take(api, report):
    fact = _fact(report, "Reaction Time", 1)
    correction = _correct(api, report, {"fact": fact["id"], "value": "N/A"}).json()["correction"]
    assert correction["value"] == "N/A" and correction["number"] is None and correction["placeholder"]


def test_a_locked_table_refuses_corrections_until_unlocked(api, staff_api, report, clinician, staff):
    fact = _fact(report, "Reaction Time", 1)
    locked = staff_api.post(f"/api/reports/{report.pk}/facts/lock")
    assert locked.status_code == 200, locked.content
    assert locked.json()["locked"] and locked.json()["by"] == "staff" and locked.json()["at"]
    assert facts.load_table(report.folder)["lock"] == {"by": "staff", "at": locked.json()["at"]}
    refused = _correct(api, report, {"fact": fact["id"], "value": "400"})
    assert refused.status_code == 409
    assert "locked by staff" in refused.json()["detail"] and "unlock it" in refused.json()["detail"]
    again = api.post(f"/api/reports/{report.pk}/facts/lock")
    assert again.status_code == 409 and "already locked by staff" in again.json()["detail"]
    unlocked = api.delete(f"/api/reports/{report.pk}/facts/lock")
    assert unlocked.status_code == 200 and unlocked.json() == {**locked.json(), "locked": False}
    assert facts.load_table(report.folder)["lock"] is None
    assert api.delete(f"/api/reports/{report.pk}/facts/lock").status_code == 409
    assert _correct(api, report, {"fact": fact["id"], "value": "400"}).status_code == 200
    trail = list(AuditEvent.objects.order_by("pk").values_list("action", "username"))
    assert [t for t in trail if t[0] != "token.used"] == [
        ("facts.locked", "staff"),
        ("facts.unlocked", "clinician"),
        ("fact.corrected", "clinician"),
    ]


def test_staff_correct_too_and_a_clinician_not_assigned_cannot_see_the_table(
    staff_api, report, other_clinician
):
    from tests.conftest import token_client

    fact = _fact(report, "Reaction Time", 1)
    assert _correct(staff_api, report, {"fact": fact["id"], "value": "401"}).status_code == 200
    outsider = token_client(other_clinician)
    assert _correct(outsider, report, {"fact": fact["id"], "value": "402"}).status_code == 404
    assert outsider.post(f"/api/reports/{report.pk}/facts/lock").status_code == 404
    assert facts.load_table(report.folder)["lock"] is None


def test_the_number_check_reads_a_correction_made_through_the_api(checked_run, api):  # noqa: F811
    run, _artifact, rt, wrong = checked_run
    refused = api.post(f"/api/runs/{run.pk}/export")
    assert refused.status_code == 409 and len(refused.json()["unresolved"]) == 1
    # The draft's session-2 value is what the page really says: the clinician corrects the table.
    assert _correct(api, run.report, {"fact": rt[2]["id"], "value": wrong}).status_code == 200
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
