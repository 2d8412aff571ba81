"""Staff record a patient's identifiers (and redactions) inline on the patient in the Django admin; a date of
birth must be a real date, and nothing about an identifier's value is written to the admin's history."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry

from patients.models import Patient, PatientIdentifier

pytestmark = pytest.mark.django_db


def _form(patient: Patient, rows: list[tuple[str, str]]) -> dict[str, str]:
    data = {
        "label": patient.label,
        "notes": "",
        "age": "",
        "sex": "",
        "handedness": "",
        "medications": "",
        "referral_reason": "",
        "identifiers-TOTAL_FORMS": str(len(rows)),
        "identifiers-INITIAL_FORMS": "0",
        "redactions-TOTAL_FORMS": "1",
        "redactions-INITIAL_FORMS": "0",
        "redactions-0-phrase": "Lindenhof School",
        "redactions-0-report": "",
        "reports-TOTAL_FORMS": "0",
        "reports-INITIAL_FORMS": "0",
    }
    for i, (kind, value) in enumerate(rows):
        data[f"identifiers-{i}-kind"] = kind
        data[f"identifiers-{i}-value"] = value
    return data


def test_staff_add_identifiers_inline_on_the_patient(staff, staff_client):
    client = staff_client
    patient = Patient.objects.create(label="SYNTH-ADMIN")
    url = f"/admin/patients/patient/{patient.pk}/change/"
    assert "identifiers (kept here" in client.get(url).content.decode().lower()
    rows = [("name", " Anna-Maria  Müller "), ("birth_date", "2016-03-14"), ("record_number", "00447192")]
    response = client.post(url, _form(patient, rows))
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = {(i.kind, i.value, i.created_by_id) for i in patient.identifiers.all()}
    assert stored == {
        ("name", "Anna-Maria Müller", staff.pk),
        ("birth_date", "2016-03-14", staff.pk),
        ("record_number", "00447192", staff.pk),
    }
    assert patient.redactions.get().phrase == "Lindenhof School"
    history = " ".join(str(e.change_message) + e.object_repr for e in LogEntry.objects.all())
    assert "Müller" not in history and "00447192" not in history and "2016" not in history


def test_a_date_of_birth_that_is_not_a_date_is_refused(staff_client):
    client = staff_client
    patient = Patient.objects.create(label="SYNTH-ADMIN")
    response = client.post(
        f"/admin/patients/patient/{patient.pk}/change/", _form(patient, [("birth_date", "14th")])
    )
    assert (
        response.status_code == 200 and "Enter the date of birth as YYYY-MM-DD." in response.content.decode()
    )
    assert PatientIdentifier.objects.count() == 0
