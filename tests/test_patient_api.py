"""The patient API (as staff, who keep the records): create, read, update, search, paginate; 404 and
case-insensitive 409 as JSON."""

from __future__ import annotations

from patients.models import Patient
from qeeg_site.models import ApiToken


def test_create_then_read_back(staff_api, staff):
    response = staff_api.post(
        "/api/patients",
        {"label": "SYNTH-101", "age": 34, "sex": "female", "handedness": "left", "medications": "none"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["label"] == "SYNTH-101" and body["age"] == 34 and body["handedness"] == "left"
    assert Patient.objects.get(pk=body["id"]).created_by == staff
    assert staff_api.get(f"/api/patients/{body['id']}").json()["medications"] == "none"


def test_duplicate_label_is_409_ignoring_case(staff_api, db):
    Patient.objects.create(label="Synth-102")
    response = staff_api.post("/api/patients", {"label": "SYNTH-102"}, content_type="application/json")
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]
    assert Patient.objects.count() == 1


def test_update_changes_only_given_fields_and_guards_the_label(staff_api, db):
    patient = Patient.objects.create(label="SYNTH-103", notes="keep me")
    Patient.objects.create(label="SYNTH-104")
    response = staff_api.put(
        f"/api/patients/{patient.pk}",
        {"referral_reason": "attention complaints", "age": 9},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    patient.refresh_from_db()
    assert (patient.referral_reason, patient.age, patient.notes) == ("attention complaints", 9, "keep me")
    clash = staff_api.put(
        f"/api/patients/{patient.pk}", {"label": "synth-104"}, content_type="application/json"
    )
    assert clash.status_code == 409
    # Renaming to a different case of its own label is not a clash.
    same = staff_api.put(
        f"/api/patients/{patient.pk}", {"label": "synth-103"}, content_type="application/json"
    )
    assert same.status_code == 200 and same.json()["label"] == "synth-103"


def test_invalid_fields_are_422_with_a_readable_detail(staff_api, db):
    response = staff_api.post(
        "/api/patients", {"label": "X", "sex": "robot"}, content_type="application/json"
    )
    assert response.status_code == 422
    assert "sex" in response.json()["detail"]


def test_unknown_ids_are_404_json(staff_api, db):
    for method, url in [
        ("get", "/api/patients/404"),
        ("put", "/api/patients/404"),
        ("get", "/api/patients/404/reports"),
        ("get", "/api/reports/404"),
        ("get", "/api/reports/404/text"),
        ("get", "/api/reports/404/pages/1.png"),
        ("get", "/api/reports/404/original"),
    ]:
        response = getattr(staff_api, method)(
            url, {} if method == "get" else "{}", content_type="application/json"
        )
        assert response.status_code == 404, (method, url, response.content)
        assert "No " in response.json()["detail"] and "404" in response.json()["detail"]


def test_list_searches_and_paginates(staff_api, db):
    for n in range(55):
        Patient.objects.create(label=f"SYNTH-{n:03d}", referral_reason="sleep" if n == 7 else "")
    page1 = staff_api.get("/api/patients").json()
    assert page1["count"] == 55 and len(page1["items"]) == 50
    page2 = staff_api.get("/api/patients?page=2").json()
    assert [p["label"] for p in page2["items"]] == [f"SYNTH-{n:03d}" for n in range(50, 55)]
    assert [p["label"] for p in staff_api.get("/api/patients?q=sleep").json()["items"]] == ["SYNTH-007"]
    assert staff_api.get("/api/patients?q=synth-01").json()["count"] == 10


def test_token_clients_can_write_without_csrf(staff, db):
    """A real client sends no CSRF cookie; the bearer token alone must do for POST and PUT."""
    from django.test import Client

    _, token = ApiToken.issue(user=staff, name="tests")
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {token}"})
    created = client.post("/api/patients", {"label": "SYNTH-105"}, content_type="application/json")
    assert created.status_code == 201, created.content
    updated = client.put(
        f"/api/patients/{created.json()['id']}", {"age": 50}, content_type="application/json"
    )
    assert updated.status_code == 200


def test_session_writes_still_need_the_csrf_token(staff, db):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    response = client.post("/api/patients", {"label": "SYNTH-106"}, content_type="application/json")
    assert response.status_code == 403
    assert not Patient.objects.filter(label="SYNTH-106").exists()


def test_a_label_of_spaces_is_422_not_a_server_error(staff_api, db):
    patient = Patient.objects.create(label="SYNTH-105")
    created = staff_api.post("/api/patients", {"label": "   "}, content_type="application/json")
    updated = staff_api.put(f"/api/patients/{patient.pk}", {"label": "  "}, content_type="application/json")
    for response in (created, updated):
        assert response.status_code == 422, response.content
        assert response.json()["detail"] == "label: This field cannot be blank."
    assert list(Patient.objects.values_list("label", flat=True)) == ["SYNTH-105"]


def test_null_clears_a_text_field_instead_of_claiming_the_label_is_taken(staff_api, db):
    patient = Patient.objects.create(label="SYNTH-106", notes="old", medications="old", age=30)
    response = staff_api.put(
        f"/api/patients/{patient.pk}",
        {"notes": None, "medications": None, "age": None},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    patient.refresh_from_db()
    assert (patient.notes, patient.medications, patient.age) == ("", "", None)
