"""Numbers of Stages 3, 4 and 6 checked against the report's fact table when shown and exported: flagged
numbers marked with the nearest fact, citations linked to page images, exporting a draft with flagged
numbers refused (409 with the list) until each is acknowledged, the acknowledgement kept with who and when."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from patients import facts
from runs import selectors
from runs.models import NumberAcknowledgement, Run
from tests.checked_runs import make_checked_run


@pytest.fixture
def checked_run(db, data_dir: Path, tmp_path: Path):
    return make_checked_run(tmp_path)


def test_the_final_draft_page_marks_the_flagged_number_and_links_citations(checked_run, clinician_client):
    run, _artifact, _rt, wrong = checked_run
    html = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
    assert "2 numbers checked against the fact table: 1 match, 1 flagged (1 wrong session)" in html
    marked = html.split('<mark class="number-flag wrong_session" title=')[1].split("</mark>")[0]
    assert f">{wrong} ms" in marked
    # The title names the fact the value really is, with its page.
    assert "Wrong session; this value is Reaction Time session" in marked and "[p1]" in marked
    assert html.count('class="number-flag') == 2  # the draft's mark and the acknowledgement list's
    assert '<mark title="fine">this</mark>' in html  # the model's own mark: never styled as a flag
    page = reverse("patients:report_page", args=[run.report_id, 1])
    assert f'<a class="citation" href="{page}"' in html and html.count(f'href="{page}"') == 2


def test_export_asks_for_each_flagged_number_then_keeps_who_and_when(checked_run, api, clinician):
    run, artifact, _rt, wrong = checked_run
    refused = api.post(f"/api/runs/{run.pk}/export", {}, content_type="application/json")
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert "acknowledge" in body["detail"] and len(body["unresolved"]) == 1
    flagged = body["unresolved"][0]
    assert flagged["status"] == "wrong_session" and flagged["text"] == f"{wrong} ms"
    assert flagged["fact"]["page"] == 1 and flagged["fact"]["metric"] == "Reaction Time"
    assert not run.export_path(Run.EXPORT_MARKDOWN).exists()
    ok = api.post(
        f"/api/runs/{run.pk}/export", {"acknowledge": [flagged["key"]]}, content_type="application/json"
    )
    assert ok.status_code == 200, ok.content
    ack = NumberAcknowledgement.objects.get(artifact=artifact)
    assert ack.by == clinician and ack.key == flagged["key"] and ack.status == "wrong_session"
    # In the audit trail too: who, which number, what the check said, from where; once.
    [event] = AuditEvent.objects.filter(action="run.acknowledged")
    assert (event.user, event.patient_id, event.object_id) == (clinician, run.patient_id, str(artifact.pk))
    assert event.detail == {"number": flagged["key"], "status": "wrong_session"} and event.ip == "127.0.0.1"
    card = run.export_path(Run.EXPORT_MARKDOWN).read_text()
    assert "| Fact table now | not locked by a clinician |" in card
    assert "1 match, 1 flagged (1 wrong session)" in card
    assert f"Number “{wrong} ms”" in card and "acknowledged by clinician" in card
    # Acknowledged once is acknowledged: exporting again asks nothing (and records no second acknowledgement).
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
    assert AuditEvent.objects.filter(action="run.acknowledged").count() == 1


def test_the_page_export_form_lists_the_numbers_and_records_the_acknowledgement(
    checked_run, clinician_client, clinician
):
    run, artifact, _rt, _wrong = checked_run
    page = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
    assert 'name="acknowledge"' in page and "Acknowledge and export" in page
    key = page.split('name="acknowledge" value="')[1].split('"')[0]
    refused = clinician_client.post(reverse("runs:export", args=[run.pk]), follow=True)
    assert "not match the fact table" in refused.content.decode()
    assert not run.export_path(Run.EXPORT_MARKDOWN).exists()
    clinician_client.post(reverse("runs:export", args=[run.pk]), {"acknowledge": [key]})
    assert run.export_path(Run.EXPORT_MARKDOWN).exists()
    assert NumberAcknowledgement.objects.get(artifact=artifact).by == clinician
    assert list(AuditEvent.objects.filter(user=clinician).values_list("action", flat=True).order_by("pk"))[
        -2:
    ] == ["run.acknowledged", "run.exported"]


def test_a_correction_in_the_table_changes_the_verdict_on_read(checked_run, api):
    run, _artifact, rt, wrong = checked_run
    table = facts.load_table(run.report.folder)
    for row in table["facts"]:
        if row["id"] == rt[2]["id"]:
            row["correction"] = {"value": wrong, "number": float(wrong), "by": "clinician", "at": "now"}
    facts.write_table(run.report.folder, table)
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
    assert json.loads(json.dumps(NumberAcknowledgement.objects.count())) == 0


def test_a_made_up_long_number_is_flagged_and_one_the_report_prints_is_not(
    db, data_dir: Path, tmp_path: Path, clinician_client, api
):
    """A draft's unitless 7+ digit number: left unchecked when the source report's text prints it, flagged
    (and asked for at export) when it is made up."""
    run, _artifact, _rt, wrong = make_checked_run(
        tmp_path,
        more="The recording 20231145 of hospital number 8812345 was reviewed; 4471920 artefacts were removed.",
    )
    (run.report.folder / "text.md").write_text(
        "=== PAGE 1 / 4 ===\n[text layer]\nRecording 20231145\n", encoding="utf-8"
    )

    html = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
    assert (
        "4 numbers checked against the fact table: 1 match, 3 flagged (1 wrong session, 2 match nothing)"
        in html
    )
    assert '<mark class="number-flag no_match"' in html and ">4471920</mark>" in html
    assert ">20231145</mark>" not in html and ">8812345</mark>" in html
    refused = api.post(f"/api/runs/{run.pk}/export", {}, content_type="application/json")
    assert refused.status_code == 409
    assert sorted(u["text"] for u in refused.json()["unresolved"]) == sorted(
        ["4471920", "8812345", f"{wrong} ms"]
    )

    # Not printed by the report: checked too.
    (run.report.folder / "text.md").unlink()
    html = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
    assert "5 numbers checked against the fact table: 1 match, 4 flagged" in html
    assert ">20231145</mark>" in html and ">8812345</mark>" in html


def test_a_recorded_identifier_typed_in_a_draft_is_checked_like_any_number(
    db, data_dir: Path, tmp_path: Path, clinician_client, api
):
    """The number check is no oracle for identifiers a clinician cannot see: a typed 7+ digit number that is the
    patient's recorded record number (or a redaction) is flagged exactly as a made-up one, and the stage page,
    the export's refusal and the check itself read the same whether or not it is recorded."""
    import re

    from patients.models import PatientIdentifier, Redaction

    run, artifact, _rt, _wrong = make_checked_run(
        tmp_path, more="The hospital number 8812345 and the recording 5503921 were reviewed."
    )

    def seen() -> tuple[str, object, object]:
        page = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
        page = re.sub(
            r'(csrfmiddlewaretoken" value="|csrf-token" content="|"X-CSRFToken": ")[^"]+', r"\1", page
        )
        refused = api.post(f"/api/runs/{run.pk}/export", {}, content_type="application/json")
        checks = selectors.number_checks(artifact, facts.load_table(run.report.folder))
        return page, (refused.status_code, refused.json()), [(c.mention.text, c.status) for c in checks]

    unknown = seen()
    assert ("8812345", "no_match") in unknown[2] and ("5503921", "no_match") in unknown[2]
    PatientIdentifier.objects.create(patient=run.patient, kind="record_number", value="HN 8812345")
    Redaction.objects.create(patient=run.patient, phrase="5503921")
    assert seen() == unknown
