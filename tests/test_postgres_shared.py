"""The PostgreSQL fixture: a migrated database of the test's own whose committed rows a child process shares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.db import connection

from patients.models import Patient

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import django
django.setup()
from django.db import connection
from patients.models import Patient
assert connection.vendor == "postgresql", connection.vendor
print(",".join(sorted(Patient.objects.values_list("label", flat=True))))
Patient.objects.create(label="written by the child")
"""


def test_a_child_process_reads_and_writes_the_tests_rows(postgres_db):
    assert connection.vendor == "postgresql"
    assert not Patient.objects.exists()  # a fresh copy of the migrated template
    Patient.objects.create(label="written by the test")
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=postgres_db.child_env(DJANGO_SETTINGS_MODULE="qeeg_site.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "written by the test"
    assert set(Patient.objects.values_list("label", flat=True)) == {
        "written by the test",
        "written by the child",
    }


def test_each_test_gets_its_own_database(postgres_db):
    assert not Patient.objects.filter(label="written by the test").exists()
    assert connection.settings_dict["NAME"] in postgres_db.url


def test_subprocess_env_names_the_shared_database_in_any_order(subprocess_env, postgres_db):
    assert subprocess_env["DATABASE_URL"] == postgres_db.url
    assert subprocess_env["QEEG_DATA_DIR"] == str(postgres_db.data_dir)
