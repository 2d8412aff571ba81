"""The pages: staff record identifiers on the patient page (nobody else sees or changes them); the report's
"What the council will see" page shows exactly what every stage is given, beside the original, and a
redaction added there is stored, applied to the next run, and can be removed."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import Patient, PatientIdentifier, Redaction, Report
from patients.services import report_ingest, report_upload
from runs import sources
from tests.deid_samples import PLANTED, make_identified_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def report(tmp_path) -> Report:
    patient = Patient.objects.create(label="SYNTH-001", referral_reason="Anna-Maria, attention concerns")
    PatientIdentifier.objects.create(patient=patient, kind="name", value=PLANTED["name"])
    make_identified_report(tmp_path / "r.txt")
    upload = SimpleUploadedFile("r.txt", (tmp_path / "r.txt").read_bytes(), content_type="text/plain")
    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [report] = report_upload(patient=patient, files=[upload])
    report_ingest(report_id=report.pk)
    report.refresh_from_db()
    return report


def test_staff_record_and_remove_identifiers_on_the_patient_page(staff_client, report):
    patient = report.patient
    page = staff_client.get(f"/patients/{patient.pk}/").content.decode()
    assert 'id="identifiers"' in page and "Anna-Maria Müller-Lüdenscheidt" in page
    response = staff_client.post(
        f"/patients/{patient.pk}/identifiers/", {"kind": "birth_date", "value": "2016-03-14"}
    )
    assert response.status_code == 302
    dob = patient.identifiers.get(kind="birth_date")
    assert dob.value == "2016-03-14" and dob.created_by is not None
    refused = staff_client.post(
        f"/patients/{patient.pk}/identifiers/", {"kind": "birth_date", "value": "14/3"}
    )
    assert refused.status_code == 422 and "YYYY-MM-DD" in refused.content.decode()
    again = staff_client.post(
        f"/patients/{patient.pk}/identifiers/", {"kind": "birth_date", "value": "2016-03-14"}
    )
    assert again.status_code == 422 and "already recorded" in again.content.decode()
    assert staff_client.post(f"/patients/{patient.pk}/identifiers/{dob.pk}/delete/").status_code == 302
    assert not patient.identifiers.filter(kind="birth_date").exists()


def test_a_clinician_neither_sees_nor_changes_identifiers(clinician_client, report):
    patient = report.patient
    page = clinician_client.get(f"/patients/{patient.pk}/").content.decode()
    assert 'id="identifiers"' not in page and "Müller-Lüdenscheidt" not in page
    response = clinician_client.post(f"/patients/{patient.pk}/identifiers/", {"kind": "name", "value": "X Y"})
    assert response.status_code == 403
    name = patient.identifiers.get()
    assert clinician_client.post(f"/patients/{patient.pk}/identifiers/{name.pk}/delete/").status_code == 403
    assert patient.identifiers.count() == 1


def test_the_preview_shows_what_is_sent_beside_the_original(clinician_client, report):
    page = clinician_client.get(f"/runs/reports/{report.pk}/council-view/").content.decode()
    sent = sources.council_source(patient=report.patient, report=report)
    assert "What the council will see" in page
    # The original on the left (it stays here), the de-identified text on the right, tokens marked.
    assert "MÜLLER-LÜDENSCHEIDT, Anna-Maria" in page
    assert '<mark class="deid">[NAME]</mark>' in page and '<mark class="deid">day 23</mark>' in page
    assert sent.council_input.clinical_context["Reason for referral"] == "[NAME], attention concerns"
    assert "[NAME], attention concerns" in page
    assert "None: page images never leave" in page
    report_page = clinician_client.get(f"/reports/{report.pk}/").content.decode()
    assert f"/runs/reports/{report.pk}/council-view/" in report_page


def test_a_redaction_is_stored_applied_and_removable(clinician_client, report):
    phrase_in_report = "NeuroClinic"
    assert (
        phrase_in_report
        in sources.council_source(patient=report.patient, report=report).council_input.report_text
    )
    response = clinician_client.post(
        f"/reports/{report.pk}/redactions/", {"phrase": "neuro clinic", "scope": "patient"}
    )
    assert response.status_code == 302 and response["Location"] == f"/runs/reports/{report.pk}/council-view/"
    redaction = Redaction.objects.get()
    assert redaction.report is None and redaction.patient == report.patient
    text = sources.council_source(patient=report.patient, report=report).council_input.report_text
    assert phrase_in_report not in text and "[REDACTED] qEEG summary" in text
    assert sources.guard_for(report.patient, report).find("at NEUROCLINIC") == "a redacted phrase"
    page = clinician_client.get(f"/runs/reports/{report.pk}/council-view/").content.decode()
    assert "<code>neuro clinic</code>" in page
    assert clinician_client.post(f"/reports/{report.pk}/redactions/{redaction.pk}/delete/").status_code == 302
    assert not Redaction.objects.exists()


def test_a_redaction_for_one_report_stays_with_that_report(clinician_client, report, tmp_path):
    clinician_client.post(f"/reports/{report.pk}/redactions/", {"phrase": "NeuroClinic", "scope": "report"})
    other_path = tmp_path / "other.txt"
    other_path.write_text("NeuroClinic follow-up, Session 1 2024-05-01\n", encoding="utf-8")
    upload = SimpleUploadedFile("other.txt", other_path.read_bytes(), content_type="text/plain")
    with mock.patch("jobs.launcher.launch_command", return_value=0):
        [other] = report_upload(patient=report.patient, files=[upload])
    report_ingest(report_id=other.pk)
    other.refresh_from_db()
    assert (
        "[REDACTED]"
        in sources.council_source(patient=report.patient, report=report).council_input.report_text
    )
    assert (
        "NeuroClinic" in sources.council_source(patient=other.patient, report=other).council_input.report_text
    )


@pytest.mark.parametrize(
    "form", [{}, {"phrase": "x", "scope": "report"}, {"phrase": "abc", "scope": "everywhere"}]
)
def test_a_bad_redaction_is_refused_with_a_message(clinician_client, report, form):
    response = clinician_client.post(f"/reports/{report.pk}/redactions/", form, follow=True)
    assert response.status_code in (200, 422)
    body = response.content.decode()
    assert "three letters or digits" in body or "Enter a phrase" in body
    assert not Redaction.objects.exists()
