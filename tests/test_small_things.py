"""Small things a user trips over: a duplicate upload is accepted with a warning that links the earlier report;
patient search ignores case and accents; a label that is too long is refused with its length, never cut; the
run wizard marks models whose owner (from /v1/models) says they are fake."""

from __future__ import annotations

import html

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import Patient, Report, fold
from tests.run_helpers import make_patient, make_ready_report
from tests.synthetic_reports import make_text_report


@pytest.mark.parametrize(
    ("label", "folded"),
    [("Zoë Müller-Ødegård 患者 #017", "zoe muller-odegard 患者 #017"), ("STRAßE Łódź", "strasse lodz")],
)
def test_fold_drops_case_and_accents(label, folded):
    assert fold(label) == folded


@pytest.mark.django_db
def test_search_ignores_case_and_accents_on_the_page_and_the_api(clinician_client):
    for label in ("Zoë Müller-Ødegård 患者 #017", "Anders Ødegård", "Bob Smith"):
        Patient.objects.create(label=label)
    cases = {
        "ødegård": {"Zoë Müller-Ødegård 患者 #017", "Anders Ødegård"},
        "ODEGARD": {"Zoë Müller-Ødegård 患者 #017", "Anders Ødegård"},
        "zoe muller": {"Zoë Müller-Ødegård 患者 #017"},
        "患者": {"Zoë Müller-Ødegård 患者 #017"},
        "smith": {"Bob Smith"},
    }
    for q, expected in cases.items():
        found = {p["label"] for p in clinician_client.get("/api/patients", {"q": q}).json()["items"]}
        assert found == expected, q
        page = html.unescape(clinician_client.get("/", {"q": q}).content.decode())
        assert all(label in page for label in expected) and ("Bob Smith" in page) == ("Bob Smith" in expected)


@pytest.mark.django_db
def test_a_renamed_patient_is_found_by_its_new_label(staff_client):
    patient = Patient.objects.create(label="Old name")
    response = staff_client.post(f"/patients/{patient.pk}/edit/", {"label": "Émile Ångström"})
    assert response.status_code in (200, 302)
    patient.refresh_from_db()
    assert patient.label_folded == "emile angstrom"
    assert [p["label"] for p in staff_client.get("/api/patients?q=angstrom").json()["items"]] == [
        "Émile Ångström"
    ]


@pytest.mark.django_db
def test_a_label_too_long_is_refused_with_its_length_not_cut(staff_client):
    form_page = staff_client.get("/").content.decode()
    assert 'name="label"' in form_page and 'maxlength="100"' not in form_page  # the browser does not cut it
    long_label = "L" * 130
    response = staff_client.post("/patients/new/", {"label": long_label})
    body = html.unescape(response.content.decode())
    assert "at most 100 characters (this one has 130)" in body and "nothing was cut" in body
    assert not Patient.objects.exists()
    api = staff_client.post("/api/patients", {"label": long_label}, content_type="application/json")
    assert api.status_code == 422 and "at most 100 characters" in api.json()["detail"]
    assert not Patient.objects.exists()


def _upload(client, patient, path):
    with path.open("rb") as handle:
        return client.post(f"/patients/{patient.pk}/reports/upload/", {"files": handle}, follow=True)


@pytest.mark.django_db
def test_a_duplicate_upload_warns_and_links_the_earlier_report(staff_client, staff_api, tmp_path, launched):
    patient = make_patient()
    path = tmp_path / "wavi-export.txt"
    make_text_report(path, seed=3)
    first_page = _upload(staff_client, patient, path).content.decode()
    assert "same content" not in first_page
    first = Report.objects.get()
    page = html.unescape(_upload(staff_client, patient, path).content.decode())
    assert "wavi-export.txt has the same content as" in page
    assert f'<a href="/reports/{first.pk}/">wavi-export.txt</a> (report {first.pk}' in page
    second = Report.objects.exclude(pk=first.pk).get()
    upload = SimpleUploadedFile("again.txt", path.read_bytes(), content_type="text/plain")
    response = staff_api.post(f"/api/patients/{patient.pk}/reports", {"files": [upload]})
    assert response.status_code == 201 and response.json()[0]["duplicate_of"] == first.pk
    assert staff_api.get(f"/api/reports/{first.pk}").json()["duplicate_of"] is None
    assert staff_api.get(f"/api/reports/{second.pk}").json()["duplicate_of"] == first.pk
    # The same content for another patient is not a duplicate.
    other = make_patient("SYNTH-002")
    assert "same content" not in _upload(staff_client, other, path).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_wizard_marks_fake_models_and_repeated_reports(clinician_client, fake_upstream, tmp_path):
    patient = make_patient()
    first = make_ready_report(patient, tmp_path, seed=5)
    make_ready_report(patient, tmp_path, seed=5)  # the same file again
    html_ = clinician_client.get(f"/runs/patients/{patient.pk}/panel/").content.decode()
    assert html_.count("same content as") == 1 and f"(report {first.pk})" in html_
    assert (
        f'name="reports" value="{first.pk}" checked>' in html_
    )  # the original is offered first, not the copy
    # The fake upstream lists its test models with owner "fake" and the named ones with real owners.
    fake_rows = [row for row in html_.split("<label") if 'value="fake-slow"' in row]
    assert fake_rows and "fake-model" in fake_rows[0]
    real_rows = [row for row in html_.split("<label") if 'name="council_models" value="gpt-5"' in row]
    assert real_rows and "fake-model" not in real_rows[0]
    assert "fake-slow (fake: owner “fake”)</option>" in html_
