"""The patient search's trigram index (patients/search_index.py): a search counts (and, when its matches are
few, reads) through it without scanning every patient, and finds exactly the rows and the count the plain
search finds, whatever the text: case in any script, accents, LIKE's wildcards, quotes, short words, and
after patients are created, changed and deleted in every way the ORM can."""

from __future__ import annotations

import random

import pytest
from django.db import connection

from patients import search_index, selectors
from patients.models import Patient, fold

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = [
    "attention", "ATTENTION", "Ødegård", "ØDEGÅRD", "odegard", "Straße", "STRASSE", "İstanbul", "\u0131i",  # a dotless i
    "Ελένη", "ΕΛΈΝΗ", "Žofie", "naïve", "café", "cafe\u0301", "100%", "a_b", "x%_y", 'say "hi"', "O'Neil",
    "clinic", "sleep", "München", "MÜNCHEN", "李小龍", "follow-up", "P-0421", "p-04210", "  spaced  ",
]  # fmt: skip


def _patients(rng: random.Random, n: int) -> None:
    Patient.objects.bulk_create(
        [
            Patient(
                label=(label := f"{rng.choice(WORDS)} {i:04d}"),
                label_folded=fold(label),  # what save() keeps; bulk_create skips save()
                notes=" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4))),
                referral_reason=rng.choice([*WORDS, ""]),
            )
            for i in range(n)
        ]
    )


def _flip(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def _queries(rng: random.Random) -> list[str]:
    found = []
    for word in WORDS:
        for _ in range(2):
            start = rng.randint(0, max(0, len(word) - 1))
            found.append(_flip(rng, word[start : start + rng.randint(1, 8)]))
    return found + WORDS + ["%", "_", '"', "''", "zzz-no-such", "0421", "ss", "SS"]


def _same(q: str) -> None:
    searched = selectors.patient_search(q)
    narrowed = getattr(searched, "narrowed", None)
    plain = list(searched.values_list("pk", flat=True))
    if narrowed is None:
        assert len(q.strip()) < search_index.SHORTEST or len(fold(q.strip())) < search_index.SHORTEST, q
        return
    assert list(narrowed.values_list("pk", flat=True)) == plain, q  # the same rows, in the same order
    assert narrowed.count() == len(plain), q


def test_the_index_finds_exactly_what_the_search_finds():
    rng = random.Random(13)
    _patients(rng, 400)
    for q in _queries(rng):
        _same(q)
    # Changed every way: save(), update(), a bulk update, deletes one by one and in bulk.
    for patient in Patient.objects.order_by("?")[:30]:
        patient.notes = f"{rng.choice(WORDS)} changed"
        patient.save()
    Patient.objects.filter(pk__in=Patient.objects.order_by("?").values("pk")[:40]).update(
        referral_reason="Café"
    )
    some = list(Patient.objects.order_by("?")[:25])
    for patient in some:
        patient.label_folded, patient.notes = fold("Straße changed"), "ΕΛΈΝΗ"
    Patient.objects.bulk_update(some, ["label_folded", "notes"])
    Patient.objects.order_by("?").first().delete()
    Patient.objects.filter(pk__in=Patient.objects.order_by("?").values("pk")[:30]).delete()
    for q in [*_queries(rng), "changed", "café", "ελένη", "strasse"]:
        _same(q)


def test_a_search_is_counted_without_reading_every_patient(api):
    _patients(random.Random(2), 300)
    Patient.objects.create(label="P-04217", notes="rare")
    api.get("/api/patients", {"q": "P-0421"})
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = api.get("/api/patients", {"q": "P-0421"})
    assert response.status_code == 200 and response.json()["count"] == 1
    assert [item["label"] for item in response.json()["items"]] == ["P-04217"]
    (count,) = [q["sql"] for q in captured.captured_queries if "COUNT(*)" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + count.replace("%", "%%"))
        plan = " / ".join(row[-1] for row in cursor.fetchall())
    assert search_index.TABLE in count and "SCAN patients_patient " not in f"{plan} ", plan


def test_every_migration_leaves_the_index_and_its_triggers_in_place():
    """A migration that rebuilds patients_patient drops the triggers with the old table; it must install
    them again (search_index.install), or the index silently stops following the patients."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE %s", (f"{search_index.TABLE}%",))
        names = {row[0] for row in cursor.fetchall()}
    assert {search_index.TABLE, *search_index.TRIGGERS} <= names
