"""A clinician's patient list (`GET /api/patients`) is read the clinician's own way — the label index walked
with each row's (patient, clinician) pair looked up, or the clinician's patients sorted when few, and an
unsearched list counted from the assignments — and answers exactly the rows, order and count of the one rule
(`patient_search(q, within=patients_for(user))`), on every page, either way the pagination chooses."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.access import patients_for
from patients.models import Patient, Report
from patients.selectors import patient_search
from tests.conftest import token_client, with_role

pytestmark = pytest.mark.django_db

REASONS = ["attention concerns", "memory complaints", "sleep problems", "Attention (ADHD?)", ""]
LABELS = ["Ødegård", "odegard-2", "ANNA", "anna-b", "Zoë", "zoe", "P-0421", "p-04210", "Émile", "emile"]


@pytest.fixture
def clinic(django_user_model):
    from qeeg_site.roles import CLINICIANS

    rng = random.Random(7)
    mine = with_role(
        django_user_model.objects.create_user(username="mine", password="pass-mine-123"), CLINICIANS
    )
    other = with_role(
        django_user_model.objects.create_user(username="other", password="pass-other-1"), CLINICIANS
    )
    patients = []
    for i in range(60):
        label = (
            LABELS[i] if i < len(LABELS) else f"{rng.choice(['P', 'p', 'Q'])}-{rng.randint(0, 99999):05d}-{i}"
        )
        patient = Patient.objects.create(
            label=label,
            referral_reason=rng.choice(REASONS),
            notes=rng.choice(["", "sleep well", "ATTENTION"]),
        )
        for n in range(rng.randint(0, 2)):
            Report.objects.create(
                patient=patient, original_name="r.pdf", sha256=f"{i}{n}".zfill(64), status="ready"
            )
        patients.append(patient)
    for i, patient in enumerate(patients):
        patient.clinicians.add(*([mine] if i % 3 else []), *([other] if i % 2 else []))
    return mine, patients


def _listed(client, q: str, page: int, size: int) -> tuple[list[int], int]:
    response = client.get("/api/patients", {"q": q, "page": page, "page_size": size})
    assert response.status_code == 200, response.content
    body = response.json()
    return [row["id"] for row in body["items"]], body["count"]


@pytest.mark.parametrize("narrowed_max", [0, 1000])  # always walked, or read from the few
@pytest.mark.parametrize("q", ["", "attention", "odegard", "ANN", "p-042", "sleep", "zz-none", "Zoë"])
def test_a_clinicians_list_is_the_one_rule_page_by_page(clinic, q, narrowed_max, monkeypatch):
    monkeypatch.setattr("qeeg_site.pagination.NARROWED_MAX", narrowed_max)
    mine, _ = clinic
    client = token_client(mine)
    expected = list(patient_search(q, within=patients_for(mine)).values_list("pk", flat=True))
    assert expected or q == "zz-none"
    seen = []
    for page in range(1, max(1, -(-len(expected) // 7)) + 1):
        ids, count = _listed(client, q, page, 7)
        assert count == len(expected)
        seen += ids
    assert seen == expected


def test_an_unsearched_list_is_counted_from_the_assignments_and_follows_them(clinic):
    mine, _ = clinic
    client = token_client(mine)
    _, before = _listed(client, "", 1, 50)
    with CaptureQueriesContext(connection) as queries:
        _listed(client, "", 1, 50)
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(*)" in q["sql"]]
    assert len(counts) == 1 and 'FROM "patients_patient_clinicians"' in counts[0]
    assert '"patients_patient"' not in counts[0]
    gone = Patient.objects.filter(clinicians=mine).order_by("pk").first()
    gone.clinicians.remove(mine)
    ids, after = _listed(client, "", 1, 50)
    assert after == before - 1 and gone.pk not in ids
    Patient.objects.filter(clinicians=mine).order_by("pk").last().delete()
    assert _listed(client, "", 1, 50)[1] == before - 2
