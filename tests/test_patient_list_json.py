"""The API's patient list is answered as built (qeeg_site.pagination.answered_as_built), not validated through
its schema: the bytes must be what ninja makes of the same page validated as `PagedPatientOut` (key order,
times, nulls, escapes, the count), for every kind of reach and search."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.test import RequestFactory
from pydantic import TypeAdapter

from patients import access, selectors
from patients.api import LISTED_FIELDS, PatientOut
from patients.models import Patient, fold
from qeeg_site.api import api as ninja_api
from tests.conftest import token_client

WORDS = ["attention", "Ødegård", "sleep", 'quote "x"', "back\\slash", "tab\there", "line\nbreak", "中文", "é"]


def _moment(rng: random.Random) -> datetime:
    # Whole seconds and every kind of microsecond (Django's encoder keeps milliseconds).
    micro = rng.choice([0, 1, 999, 1000, 123456, 999999, rng.randint(0, 999999)])
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 3 * 10**7), microseconds=micro)


def _generated_patients(rng: random.Random, reader) -> None:
    """90 patients of every shape; `reader` is assigned about half of them."""
    for i in range(90):
        label = f"{rng.choice(['P', 'p', 'Ö', 'Z'])}-{i:03d} {rng.choice(WORDS)}"
        patient = Patient.objects.create(
            label=label,
            notes=rng.choice(["", *WORDS, " ".join(rng.sample(WORDS, 3))]),
            age=rng.choice([None, 0, 7, 130]),
            sex=rng.choice(Patient.Sex.values),
            handedness=rng.choice(Patient.Handedness.values),
            medications=rng.choice(["", "methylphenidate 10 mg", "none\u2028known"]),
            referral_reason=rng.choice(["", "attention concerns", "memory", "Sleep <b>"]),
        )
        Patient.objects.filter(pk=patient.pk).update(created_at=_moment(rng), updated_at=_moment(rng))
        if rng.random() < 0.5:
            patient.clinicians.add(reader)
    assert Patient.objects.filter(label_folded=fold(label)).exists()


def _as_ninja_validates(user, q: str, page: int, page_size: int) -> bytes:
    """The page as the route answered it before: the same patients, as model instances, through the schema."""
    found = selectors.patient_search(q, within=access.patients_for(user))
    offset = (page - 1) * page_size
    schema = TypeAdapter(list[PatientOut])
    items = schema.dump_python(schema.validate_python(list(found[offset : offset + page_size])))
    body = {"items": items, "count": found.count()}
    return ninja_api.create_response(RequestFactory().get("/"), body, status=200).content


QUERIES = [
    ("", 1, 50),
    ("", 2, 17),
    ("attention", 1, 50),
    ("ATTENTION", 2, 5),
    ("odegard", 1, 50),
    ("p-01", 1, 50),
    ("é", 1, 50),  # shorter than a trigram: no index
    ('"x"', 1, 50),
    ("nothing-like-it", 1, 50),
]


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2])
def test_the_patient_list_is_byte_for_byte_what_the_schema_would_answer(other_clinician, staff, seed):
    _same_bytes(other_clinician, staff, seed)


def test_the_patient_list_is_byte_for_byte_what_the_schema_would_answer_on_postgresql(
    postgres_db, other_clinician, staff
):
    # No search index there; times come back from PostgreSQL's own driver.
    _same_bytes(other_clinician, staff, 3)


def _same_bytes(clinician, staff, seed: int) -> None:
    _generated_patients(random.Random(seed), clinician)
    for user in (clinician, staff):  # the assigned patients' walk, and everyone's
        client = token_client(user)
        for q, page, size in QUERIES:
            response = client.get("/api/patients", {"q": q, "page": page, "page_size": size})
            assert response.status_code == 200, (q, page, response.content)
            assert response["Content-Type"] == "application/json; charset=utf-8"
            assert response.content == _as_ninja_validates(user, q, page, size), (user.username, q, page)
            listed = response.json()
            if listed["items"]:
                assert list(listed["items"][0]) == list(PatientOut.model_fields) == list(LISTED_FIELDS)
    everyone = token_client(staff).get("/api/patients", {"page_size": 100}).json()["items"]
    assert any("." in p["created_at"] for p in everyone) and any(p["age"] is None for p in everyone)


@pytest.mark.django_db
def test_no_listed_patient_goes_through_ninjas_validator(api, clinician, monkeypatch):
    import ninja.schema

    patients = [Patient.objects.create(label=f"SYNTH-{i}") for i in range(3)]
    made = []
    built = ninja.schema.DjangoGetter.__init__

    def counted(self, obj, schema_cls, context=None):
        made.append(schema_cls)
        built(self, obj, schema_cls, context)

    monkeypatch.setattr(ninja.schema.DjangoGetter, "__init__", counted)
    assert api.get("/api/patients").json()["count"] == 3
    assert PatientOut not in made
    assert (
        api.get(f"/api/patients/{patients[0].pk}").status_code == 200 and PatientOut in made
    )  # a detail still is


@pytest.mark.django_db
def test_a_page_past_the_last_is_still_a_422(api, clinician):
    Patient.objects.create(label="SYNTH-1")
    response = api.get("/api/patients?page=2")
    assert response.status_code == 422
    assert response.json()["detail"] == "page 2 is past the last page (1: 1 item(s), 50 a page)."
