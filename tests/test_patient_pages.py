"""Patient pages: list with search, create, edit and upload (as staff, who keep the records), htmx fragments,
status polling only while unfinished; the admin for staff; nobody signed out gets in."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import Patient, Report
from tests.synthetic_reports import make_encrypted_pdf, make_long_pdf

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def patient(db) -> Patient:
    return Patient.objects.create(label="SYNTH-201", referral_reason="sleep onset")


def test_list_shows_patients_and_searches(clinician_client, patient):
    Patient.objects.create(label="SYNTH-202")
    page = clinician_client.get("/").content.decode()
    assert "SYNTH-201" in page and "SYNTH-202" in page and "<html" in page
    found = clinician_client.get("/?q=sleep").content.decode()
    assert "SYNTH-201" in found and "SYNTH-202" not in found


def test_search_from_htmx_gets_only_the_table(clinician_client, patient):
    fragment = clinician_client.get("/?q=201", **HX).content.decode()
    assert fragment.lstrip().startswith('<div id="patient-table">')
    assert "<html" not in fragment and "SYNTH-201" in fragment


def test_create_patient_from_the_list(staff_client, staff, db):
    response = staff_client.post(
        "/patients/new/",
        {
            "label": " SYNTH-203 ",
            "age": "41",
            "sex": "male",
            "handedness": "right",
            "medications": "sertraline",
        },
    )
    patient = Patient.objects.get(label="SYNTH-203")
    assert response.status_code == 302 and response["Location"] == f"/patients/{patient.pk}/"
    assert (patient.age, patient.sex, patient.medications, patient.created_by) == (
        41,
        "male",
        "sertraline",
        staff,
    )


def test_duplicate_label_on_the_form_says_so(staff_client, patient):
    response = staff_client.post("/patients/new/", {"label": "synth-201"})
    assert response.status_code == 422
    assert "already exists" in response.content.decode()
    assert Patient.objects.count() == 1


def test_edit_every_clinical_field(staff_client, patient):
    response = staff_client.post(
        f"/patients/{patient.pk}/edit/",
        {
            "label": "SYNTH-201",
            "age": "12",
            "sex": "female",
            "handedness": "ambidextrous",
            "medications": "methylphenidate 10 mg",
            "referral_reason": "attention",
            "notes": "synthetic",
        },
    )
    assert response.status_code == 302
    patient.refresh_from_db()
    assert patient.clinical_context() == {
        "Age": "12",
        "Sex": "Female",
        "Handedness": "Ambidextrous",
        "Medications": "methylphenidate 10 mg",
        "Reason for referral": "attention",
    }
    assert patient.notes == "synthetic"


def test_upload_several_files_from_the_patient_page(
    staff_client, patient, tmp_path, launched, django_capture_on_commit_callbacks
):
    files = []
    for name in ("a.pdf", "b.pdf"):
        make_long_pdf(tmp_path / name, pages=1)
        files.append(SimpleUploadedFile(name, (tmp_path / name).read_bytes()))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/patients/{patient.pk}/reports/upload/", {"files": files})
    assert response.status_code == 302
    assert sorted(patient.reports.values_list("original_name", "status")) == [
        ("a.pdf", "pending"),
        ("b.pdf", "pending"),
    ]
    assert len(launched) == 1
    page = staff_client.get(f"/patients/{patient.pk}/").content.decode()
    assert "Uploaded a.pdf, b.pdf" in page
    assert 'hx-trigger="every 2s"' in page
    assert "{# runs panel" not in page  # the marker is a template comment, invisible on the page


def test_rejected_upload_on_the_page_explains_and_keeps_nothing(staff_client, patient, tmp_path, data_dir):
    make_encrypted_pdf(tmp_path / "locked.pdf")
    upload = SimpleUploadedFile("locked.pdf", (tmp_path / "locked.pdf").read_bytes())
    response = staff_client.post(f"/patients/{patient.pk}/reports/upload/", {"files": [upload]}, follow=True)
    assert "Nothing was uploaded: locked.pdf is password-protected" in response.content.decode()
    assert not Report.objects.exists()
    assert not any((data_dir / "reports").iterdir())


def test_reports_fragment_polls_only_while_unfinished(clinician_client, patient):
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64)
    url = f"/patients/{patient.pk}/reports/"
    fragment = clinician_client.get(url, **HX).content.decode()
    assert fragment.lstrip().startswith('<section class="card" id="reports" hx-get=')
    assert 'hx-trigger="every 2s"' in fragment and "Pending" in fragment
    Report.objects.filter(pk=report.pk).update(status="failed", error="r.pdf is damaged")
    fragment = clinician_client.get(url, **HX).content.decode()
    assert "every 2s" not in fragment
    assert "r.pdf is damaged" in fragment


def test_outsider_is_sent_to_sign_in(outsider, patient):
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64)
    for url in [
        "/",
        f"/patients/{patient.pk}/",
        f"/patients/{patient.pk}/reports/",
        f"/reports/{report.pk}/",
        f"/reports/{report.pk}/original/",
        f"/reports/{report.pk}/pages/1.png",
    ]:
        response = outsider.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    response = outsider.post("/patients/new/", {"label": "SYNTH-X"})
    assert response.status_code in (302, 403)
    assert not Patient.objects.filter(label="SYNTH-X").exists()


def test_admin_pages_load_for_staff(staff, patient, client):
    report = Report.objects.create(patient=patient, original_name="r.pdf", sha256="0" * 64, error="boom")
    client.force_login(staff)
    for url in [
        "/admin/patients/patient/",
        "/admin/patients/patient/?q=sleep",
        "/admin/patients/patient/?sex=female",
        f"/admin/patients/patient/{patient.pk}/change/",
        "/admin/patients/report/",
        "/admin/patients/report/?status__exact=failed&q=r.pdf",
        f"/admin/patients/report/{report.pk}/change/",
    ]:
        assert client.get(url).status_code == 200, url
    change = client.get(f"/admin/patients/report/{report.pk}/change/").content.decode()
    # Derived fields are shown, not editable.
    assert 'name="sha256"' not in change and 'name="status"' not in change and "boom" in change


def test_admin_is_closed_to_clinicians(clinician_client):
    assert clinician_client.get("/admin/patients/patient/").status_code == 302


def test_list_says_when_it_shows_only_the_first_patients(staff_client, db, monkeypatch):
    monkeypatch.setattr("patients.views.LIST_LIMIT", 3)
    Patient.objects.bulk_create(Patient(label=f"SYNTH-3{n:02d}") for n in range(4))
    page = staff_client.get("/").content.decode()
    assert "SYNTH-302" in page and "SYNTH-303" not in page
    assert "Showing the first 3 patients; search to find the others." in page
    Patient.objects.filter(label="SYNTH-303").delete()
    assert "Showing the first" not in staff_client.get("/").content.decode()


def test_an_age_past_130_is_refused_on_the_form_as_in_the_api(staff_client, patient):
    response = staff_client.post(f"/patients/{patient.pk}/edit/", {"label": "SYNTH-201", "age": "410"})
    assert response.status_code == 422
    assert "Ensure this value is less than or equal to 130." in response.content.decode()
    patient.refresh_from_db()
    assert patient.age is None
