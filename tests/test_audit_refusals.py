"""Failed access attempts are in the audit trail: a signed-in user (or token) asking for a patient, report, run,
artifact or download out of reach (404, as if it did not exist) or beyond the role (403) leaves one
`access.refused` row — who, which kind of record and its id (never anything of the patient), when, from where,
and the route asked — recorded where reach is checked (patients/access.py, runs/access.py), so pages, the
API, the live stream and downloads agree. Anonymous requests and requests that pass write nothing."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from patients.models import Patient
from qeeg_site.models import ApiToken
from tests.conftest import signed_in, token_client

ADDRESS = "192.0.2.44"
AGENT = "Probe/1.0"


def refusals():
    return AuditEvent.objects.filter(action="access.refused").order_by("pk")


def _from(user, *, token: bool = False) -> Client:
    """`user`'s client, from a known address and User-Agent."""
    client = token_client(user) if token else signed_in(user)
    client.defaults.update(REMOTE_ADDR=ADDRESS, HTTP_USER_AGENT=AGENT)
    return client


def test_a_patient_out_of_reach_is_a_404_and_a_row(world, other_clinician):
    response = _from(other_clinician).get(f"/patients/{world.patient.pk}/")
    assert response.status_code == 404
    [row] = refusals()
    assert (row.user, row.username, row.object_type, row.object_id) == (
        other_clinician,
        "other-clinician",
        "patient",
        str(world.patient.pk),
    )
    assert row.patient_id == world.patient.pk and row.ip == ADDRESS and row.user_agent == AGENT
    assert row.detail == {"status": 404, "route": "GET /patients/<int:pk>/"}
    # Nothing of the patient: no label, no identifier, in any column.
    text = " ".join(str(v) for v in AuditEvent.objects.filter(pk=row.pk).values().first().values())
    assert world.patient.label not in text and "Synthetic Person" not in text


def test_the_api_a_download_and_a_token_say_the_same(world, other_clinician):
    client = _from(other_clinician, token=True)
    assert client.get(f"/api/reports/{world.report.pk}/original").status_code == 404
    assert client.get(f"/api/runs/{world.run.pk}/export/final.pdf").status_code == 404
    assert client.get(f"/api/runs/{world.run.pk}/artifacts/{world.artifact.pk}").status_code == 404
    rows = list(refusals())
    assert [(r.object_type, r.object_id, r.detail["route"]) for r in rows] == [
        ("report", str(world.report.pk), "GET /api/reports/<int:report_id>/original"),
        ("run", str(world.run.pk), "GET /api/runs/<run_id>/export/<name>"),
        ("run", str(world.run.pk), "GET /api/runs/<run_id>/artifacts/<artifact_id>"),
    ]
    assert {(r.user_id, r.ip, r.patient_id, r.detail["status"]) for r in rows} == {
        (other_clinician.pk, ADDRESS, world.patient.pk, 404)
    }
    # The token's use is audited as before, and its refusals name the same user.
    assert ApiToken.objects.get(user=other_clinician).last_used_at is not None


def test_a_role_without_the_action_is_a_403_and_a_row(world, staff, clinician):
    assert _from(staff).get(f"/runs/{world.run.pk}/").status_code == 403  # staff read no runs
    assert _from(clinician).post(f"/patients/{world.patient.pk}/edit/", {"label": "X"}).status_code == 403
    assert (
        _from(clinician, token=True).post("/api/patients", {"label": "X"}, "application/json").status_code
        == 403
    )
    rows = list(refusals())
    assert [(r.user, r.object_type, r.object_id, r.patient_id) for r in rows] == [
        (staff, "run", str(world.run.pk), world.patient.pk),
        (clinician, "patient", str(world.patient.pk), world.patient.pk),
        (clinician, "", "", None),  # creating a patient: no record yet
    ]
    assert [r.detail for r in rows] == [
        {"status": 403, "route": "GET /runs/<int:pk>/", "permission": "runs.view_run"},
        {"status": 403, "route": "POST /patients/<int:pk>/edit/", "permission": "patients.change_patient"},
        {"status": 403, "route": "POST /api/patients", "permission": "patients.add_patient"},
    ]


def test_probing_ids_that_do_not_exist_is_recorded_id_by_id(clinician):
    client = _from(clinician, token=True)
    for pk in (999_001, 999_002, 999_003):
        assert client.get(f"/api/reports/{pk}").status_code == 404
    assert client.get("/api/runs/123456789012345678901234567890").status_code in (404, 422)
    rows = list(refusals())
    assert [r.object_id for r in rows][:3] == ["999001", "999002", "999003"]
    assert all(r.object_type == "report" and r.patient_id is None for r in rows[:3])


def test_bodies_naming_records_out_of_reach_are_recorded(world, other_clinician, clinician):
    client = _from(other_clinician, token=True)
    response = client.post(
        "/api/runs", {"patient_id": world.patient.pk, "report_id": world.report.pk}, "application/json"
    )
    assert response.status_code == 422
    own = Patient.objects.create(label="SYNTH-OWN")
    own.clinicians.add(other_clinician)
    response = client.post(
        "/api/runs", {"patient_id": own.pk, "report_ids": [world.report.pk, 999_999]}, "application/json"
    )
    assert response.status_code == 422
    mine = _from(clinician, token=True)
    response = mine.post(f"/api/runs/{world.run.pk}/select", {"artifact_id": 999_998}, "application/json")
    assert response.status_code == 422
    # The wizard's pages: another patient's report ticked by hand on one's own patient.
    page = _from(other_clinician)
    assert page.get(f"/runs/patients/{own.pk}/council-view/", {"reports": world.report.pk}).status_code == 404
    assert page.post(f"/runs/patients/{own.pk}/start/", {"reports": [world.report.pk]}).status_code == 302
    assert [(r.user, r.object_type, r.object_id, r.patient_id) for r in refusals()] == [
        (other_clinician, "patient", str(world.patient.pk), world.patient.pk),
        (other_clinician, "report", str(world.report.pk), world.patient.pk),
        (other_clinician, "report", "999999", None),
        (clinician, "artifact", "999998", None),
        (other_clinician, "report", str(world.report.pk), world.patient.pk),
        (other_clinician, "report", str(world.report.pk), world.patient.pk),
    ]


def test_someone_elses_token_and_the_audit_log_are_refusals_too(clinician, staff):
    other = ApiToken.issue(user=staff, name="theirs")[0]
    assert _from(clinician).post(f"/account/tokens/{other.pk}/revoke/").status_code == 404
    assert _from(clinician).get("/audit/").status_code == 403
    assert [(r.object_type, r.object_id, r.detail["status"]) for r in refusals()] == [
        ("apitoken", str(other.pk), 404),
        ("", "", 403),
    ]


def test_anonymous_callers_and_allowed_requests_write_no_refusal(world, clinician):
    anonymous = Client()
    assert anonymous.get(f"/patients/{world.patient.pk}/").status_code == 302
    assert anonymous.get("/api/reports/999999").status_code == 401
    assert anonymous.get("/no/such/page/").status_code in (302, 404)
    mine = _from(clinician)
    assert mine.get(f"/patients/{world.patient.pk}/").status_code == 200
    assert mine.get(f"/runs/{world.run.pk}/").status_code == 200
    assert _from(clinician, token=True).get(f"/api/reports/{world.report.pk}/original").status_code == 200
    assert not refusals().exists()


def test_a_refusal_costs_three_queries_and_an_allowed_request_none(world, clinician, other_clinician):
    url = f"/api/reports/{world.report.pk}"
    allowed, refused = _from(clinician, token=True), _from(other_clinician, token=True)
    allowed.get(url), refused.get(url)  # warm: the tokens' first use writes its own rows
    with CaptureQueriesContext(connection) as seen_allowed:
        assert allowed.get(url).status_code == 200
    with CaptureQueriesContext(connection) as seen_refused:
        assert refused.get(url).status_code == 404
    assert not any("audit_auditevent" in q["sql"] for q in seen_allowed.captured_queries)
    audit_queries = [q["sql"] for q in seen_refused.captured_queries if "audit_auditevent" in q["sql"]]
    # The user's refusals of this window counted (audit.bounds), then the row written.
    assert [q.split()[0] for q in audit_queries] == ["SELECT", "INSERT"]
    # The owner's look-up (which patient the report belongs to) is the other one, on this path only.
    assert len(seen_refused.captured_queries) <= len(seen_allowed.captured_queries) + 3


def test_the_auditor_filters_refusals_and_exports_them(world, other_clinician, auditor):
    _from(other_clinician).get(f"/reports/{world.report.pk}/")
    page = signed_in(auditor).get("/audit/", {"action": "access.refused"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "was refused a record" in body and ADDRESS in body and f"report {world.report.pk}" in body
    exported = signed_in(auditor).get("/audit/export.csv", {"action": "access.refused"})
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert [(r["username"], r["object_type"], r["object_id"], r["ip"]) for r in rows] == [
        ("other-clinician", "report", str(world.report.pk), ADDRESS)
    ]
    assert '"status": 404' in rows[0]["detail"]


@pytest.mark.django_db(transaction=True)
async def test_through_the_asgi_server_too(clinician, api_token, settings):
    """As daphne serves it (qeeg_site.asgi_handler's kept threads): the refusal knows its request."""
    from runs import feed
    from tests.stream_helpers import asgi_request

    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    headers = {"Authorization": f"Bearer {api_token}", "X-Forwarded-For": "203.0.113.61"}
    try:
        response = await asgi_request("/api/reports/999999", headers=headers)
        assert response.status == 404
        row = await refusals().aget()
        assert (row.user_id, row.object_type, row.object_id, row.ip) == (
            clinician.pk,
            "report",
            "999999",
            "203.0.113.61",
        )
        assert row.detail["route"] == "GET /api/reports/<int:report_id>"
        # The kept thread serves the next request as nobody's: an allowed one writes nothing.
        assert (await asgi_request("/api/patients", headers=headers)).status == 200
        assert await refusals().acount() == 1
    finally:
        await feed.stop_feed_for_tests()
