"""A clinician's reach is checked row by row (an EXISTS on the assignment's index), never as the list of every
patient assigned to them: SQLite built that list on each request, to check one run or to find a page of the
patient list, and then sorted every assigned patient by label."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients import access
from patients.models import Patient, Report, fold
from runs import access as run_access
from runs.models import Run
from tests.run_helpers import CONSOLIDATOR, COUNCIL

pytestmark = pytest.mark.django_db


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql.replace("%", "%%"))
        return " / ".join(row[-1] for row in cursor.fetchall())


def _checked_by_the_assignment(sql: str) -> None:
    plan = _plan(sql)
    assert "LIST SUBQUERY" not in plan and "(patient_id=? AND user_id=?)" in plan, plan


def test_a_clinicians_pages_never_list_their_patients(clinician, clinician_client):
    Patient.objects.bulk_create(
        [Patient(label=(label := f"P-{i:04d}"), label_folded=fold(label)) for i in range(300)]
    )  # no signal: assigned below, every other one
    patients = list(Patient.objects.order_by("pk"))
    clinician.assigned_patients.add(*patients[::2])
    mine, theirs = patients[0], patients[1]
    runs = {}
    for patient in (mine, theirs):
        report = Report.objects.create(patient=patient, original_name="r.pdf", sha256=f"{patient.pk:064x}")
        runs[patient] = Run.objects.create(
            patient=patient, report=report, council_models=COUNCIL, consolidator=CONSOLIDATOR
        )

    with CaptureQueriesContext(connection) as captured:
        page = clinician_client.get("/").content.decode()
    (rows,) = [q["sql"] for q in captured.captured_queries if "report_count" in q["sql"]]
    _checked_by_the_assignment(rows)
    assert "USE TEMP B-TREE" not in _plan(rows)  # the label index walked: nothing sorted
    assert page.count('<td><a href="/patients/') == 150 and "P-0001" not in page and "P-0000" in page

    with CaptureQueriesContext(connection) as captured:
        assert run_access.run_for(clinician, runs[mine].pk) == runs[mine]
    (read,) = [q["sql"] for q in captured.captured_queries if q["sql"].startswith('SELECT "runs_run"')]
    _checked_by_the_assignment(read)
    with pytest.raises(Exception, match="There is no run"):
        run_access.run_for(clinician, runs[theirs].pk)

    assert set(access.patients_for(clinician)) == set(patients[::2])
    assert set(access.reports_for(clinician)) == {runs[mine].report}
    assert set(run_access.runs_for(clinician)) == {runs[mine]}
    with CaptureQueriesContext(connection) as captured:
        assert access.patient_in_reach(clinician, theirs.pk) is None and access.patient_in_reach(
            clinician, mine.pk
        )
    reads = [q["sql"] for q in captured.captured_queries if "patients_patient_clinicians" in q["sql"]]
    assert len(reads) == 2
    for read in reads:
        _checked_by_the_assignment(read)
