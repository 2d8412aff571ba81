"""Audit rows a background job writes on someone's behalf say where that person asked from: the address and
User-Agent of the request that queued the job travel with the job (jobs.Job.origin) to its rows, read by the
same rule as every request (TRUSTED_PROXIES). Today the patient-version writer is the one job that writes a
row; an upload read by the ingestion job and a run done by the runner leave no row without an address."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from audit.models import AuditEvent
from jobs.models import Job
from patients.models import Report
from runs.models import PatientVersionRequest, Run
from tests.conftest import signed_in, token_client
from tests.run_helpers import CONSOLIDATOR, COUNCIL, make_patient, run_pipeline_here
from tests.synthetic_reports import make_text_report
from tests.test_patient_version import _write_here, signed_run_with_identifiers

pytestmark = pytest.mark.django_db(transaction=True)  # the commands' async parts read on other threads

PROXY, CLIENT, AGENT = "10.0.0.1", "203.0.113.9", "Clinic/2"


def _behind_the_proxy(client):
    client.defaults.update(
        REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"198.51.100.1, {CLIENT}", HTTP_USER_AGENT=AGENT
    )
    return client


@pytest.mark.parametrize("via", ["api", "page"])
def test_the_patient_version_row_carries_the_askers_address(
    via, data_dir, tmp_path, signer, fake_upstream, launched, settings
):
    settings.TRUSTED_PROXIES = [PROXY]
    run, *_ = signed_run_with_identifiers(tmp_path, signer)
    if via == "api":
        client = _behind_the_proxy(token_client(signer))
        url = f"/api/runs/{run.pk}/patient-version/requests"
        assert client.post(url, {"model_id": "gpt-5"}, "application/json").status_code == 202
    else:
        client = _behind_the_proxy(signed_in(signer))
        assert client.post(f"/runs/{run.pk}/patient-version/ask/", {"model": "gpt-5"}).status_code == 302
    request = PatientVersionRequest.objects.get(run=run)
    assert request.job.origin == (CLIENT, AGENT)
    code, out = _write_here(request.pk)  # the runner's process: no request of its own
    assert code == 0, out
    asked = AuditEvent.objects.get(action="patient_version.requested")
    written = AuditEvent.objects.get(action="patient_version.written")
    assert (written.user, written.ip, written.user_agent) == (signer, CLIENT, AGENT)
    assert (asked.ip, asked.user_agent) == (written.ip, written.user_agent)


def test_no_job_leaves_a_row_without_an_address(
    data_dir, tmp_path, clinician, staff, fake_upstream, launched, settings
):
    """An upload read by the ingestion job, a run started and done by the runner: every row of the trail
    (the requests' own and whatever the jobs write) says where from."""
    settings.TRUSTED_PROXIES = [PROXY]
    patient = make_patient()
    make_text_report(tmp_path / "r.txt", seed=5)
    upload = SimpleUploadedFile("r.txt", (tmp_path / "r.txt").read_bytes(), content_type="text/plain")
    response = _behind_the_proxy(token_client(staff)).post(
        f"/api/patients/{patient.pk}/reports", {"files": [upload]}
    )
    assert response.status_code == 201, response.content
    report = Report.objects.get(patient=patient)
    [job] = Job.objects.filter(kind="ingestreport")
    call_command("ingestreport", *job.args, stdout=io.StringIO(), stderr=io.StringIO())
    report.refresh_from_db()
    assert report.status == Report.Status.READY, report.error
    api = _behind_the_proxy(token_client(clinician))
    made = api.post(
        "/api/runs",
        {
            "patient_id": patient.pk,
            "report_id": report.pk,
            "council_models": COUNCIL,
            "consolidator": CONSOLIDATOR,
        },
        "application/json",
    )
    assert made.status_code == 201, made.content
    run = Run.objects.get(pk=made.json()["id"])
    assert api.post(f"/api/runs/{run.pk}/start").status_code in (200, 202)
    code, out = run_pipeline_here(run)
    assert code == 0, out
    rows = AuditEvent.objects.all()
    assert rows.count() >= 4
    assert set(rows.values_list("ip", flat=True)) == {CLIENT}, list(rows.values_list("action", "ip"))
