"""The patient list counts each patient's reports with a correlated subquery on the page's rows, not with a
GROUP BY over every patient (which made each page scan and sort the whole table), and the counts are right."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.models import Patient, Report
from patients.selectors import patient_search

pytestmark = pytest.mark.django_db


def test_report_counts_come_without_grouping_the_whole_table():
    Patient.objects.create(label="B-none")
    two = Patient.objects.create(label="a-two")
    for n in range(2):
        Report.objects.create(patient=two, original_name=f"r{n}.pdf", sha256=f"{n:064x}", status="ready")
    patients = patient_search("")
    assert [(p.label, p.report_count) for p in patients] == [("a-two", 2), ("B-none", 0)]
    sql = str(patients.query)
    outer = sql[sql.rindex("report_count") :]  # what follows the count's subquery
    assert "GROUP BY" not in outer.upper() and "FROM" in outer.upper()
    with CaptureQueriesContext(connection) as queries:
        assert patient_search("").count() == 2
    assert "GROUP BY" not in queries.captured_queries[0]["sql"].upper()
