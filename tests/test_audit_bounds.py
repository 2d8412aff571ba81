"""A signed-in user or a token cannot flood the append-only trail with refusals: in each window the first
AUDIT_REPEATS_WRITTEN refusals of a user are rows one by one, the rest are counted and the count written as
one row, so every refusal is in what an auditor reads, one by one or in a count (audit/bounds.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

from audit.bounds import _window_start
from audit.models import AuditEvent, RepeatTally
from tests.conftest import signed_in, token_client

ADDRESS = "192.0.2.61"


@pytest.fixture
def bound(settings, audit_clock):
    settings.AUDIT_REPEATS_WRITTEN = 5
    settings.AUDIT_REPEAT_WINDOW_MINUTES = 10
    return 5


def refusals(user):
    return AuditEvent.objects.filter(action="access.refused", user_id=user.pk).order_by("pk")


def _accounted(user) -> tuple[int, int]:
    """(rows one by one, refusals in counts) of `user` in the trail."""
    rows = list(refusals(user))
    counts = [r.detail["repeats"] for r in rows if "repeats" in r.detail]
    return len(rows) - len(counts), sum(counts)


def test_a_flood_of_404s_writes_its_bound_and_one_count(world, other_clinician, auditor, bound):
    _flood(other_clinician, auditor, bound)


def test_the_same_on_postgresql(django_db_setup, postgres_db, world, other_clinician, auditor, bound):
    _flood(other_clinician, auditor, bound)


def _flood(other_clinician, auditor, bound) -> None:
    client = signed_in(other_clinician)
    api = token_client(other_clinician)
    for each in client, api:
        each.defaults.update(REMOTE_ADDR=ADDRESS)
    for n in range(30):
        assert client.get(f"/patients/{100_000 + n}/").status_code == 404
        assert api.get(f"/api/patients/{100_000 + n}").status_code == 404  # a token is its user
    one_by_one, counted = _accounted(other_clinician)
    assert one_by_one <= 2 * bound  # (a window boundary crossed mid-test gives a second bound)
    assert counted == 0 and RepeatTally.objects.get().count == 60 - one_by_one
    # The auditor reads the trail: the count so far is in it, and every refusal is accounted for.
    assert signed_in(auditor).get("/audit/", {"action": "access.refused"}).status_code == 200
    assert _accounted(other_clinician) == (one_by_one, 60 - one_by_one)
    [count] = [r for r in refusals(other_clinician) if "repeats" in r.detail]
    assert count.username == "other-clinician" and count.ip == ADDRESS and count.object_id == ""
    assert count.detail["window_minutes"] == 10 and count.detail["window_start"]
    assert set(count.detail) == {"repeats", "window_start", "window_minutes"}
    # More after the read are counted again, not written twice.
    assert client.get("/patients/200000/").status_code == 404
    exported = signed_in(auditor).get("/audit/export.csv").getvalue().decode()
    assert _accounted(other_clinician) == (one_by_one, 61 - one_by_one)
    assert exported.count("repeats") == 2


def test_the_bound_is_each_users_own(world, other_clinician, clinician, bound):
    for n in range(12):
        signed_in(other_clinician).get(f"/reports/{900_000 + n}/")
    assert signed_in(clinician).get("/patients/900000/").status_code == 404
    [row] = refusals(clinician)
    assert row.object_id == "900000" and "repeats" not in row.detail


def test_a_past_windows_count_is_written_at_the_next_refusal(world, other_clinician, bound):
    start = _window_start(AuditEvent().at)
    RepeatTally.objects.create(
        action="access.refused",
        who=f"user:{other_clinician.pk}",
        window=start - timedelta(minutes=10),
        count=7,
        user_id=other_clinician.pk,
        username="other-clinician",
        ip="192.0.2.8",
    )
    client = signed_in(other_clinician)
    for n in range(bound + 1):
        client.get(f"/patients/{300_000 + n}/")
    old = [r for r in refusals(other_clinician) if "repeats" in r.detail]
    assert [(r.detail["repeats"], r.detail["window_start"], r.ip) for r in old] == [
        (7, (start - timedelta(minutes=10)).isoformat(), "192.0.2.8")
    ]
    # The past window's tally is gone once written; this window's one counts on.
    assert list(RepeatTally.objects.values_list("window", "count")) == [(start, 1)] or start != _window_start(
        AuditEvent().at
    )


def test_a_flood_of_failed_sign_ins_from_one_address_is_counted_too(db, clinician, auditor, bound, settings):
    """No account needed: each attempt past the lockout wrote two rows (failed, locked out), unbounded."""
    guesser = Client(REMOTE_ADDR=ADDRESS)
    for n in range(30):
        guesser.post("/login/", {"username": f"guess-{n}", "password": "wrong"})
    Client(REMOTE_ADDR="192.0.2.62").post("/login/", {"username": "clinician", "password": "wrong"})
    rows = AuditEvent.objects.filter(action__startswith="sign_in", ip=ADDRESS)
    assert 0 < rows.count() <= 2 * 2 * bound  # failed and locked out, each bounded (a window crossed: twice)
    # The other address is its own.
    assert AuditEvent.objects.filter(action="sign_in.failed", ip="192.0.2.62").count() == 1
    assert signed_in(auditor).get("/audit/").status_code == 200
    counted = {
        action: sum(r.detail.get("repeats", 0) for r in rows.filter(action=action))
        + rows.filter(action=action).exclude(detail__has_key="repeats").count()
        for action in ("sign_in.failed", "sign_in.locked_out")
    }
    # Locked out at the LOGIN_FAILURE_LIMIT-th failure and at every one after it.
    assert counted == {"sign_in.failed": 30, "sign_in.locked_out": 30 - settings.AXES_FAILURE_LIMIT + 1}
    count = rows.filter(detail__has_key="repeats").first()
    assert count.user_id is None and count.username == "" and count.ip == ADDRESS
    # The names typed stay in the rows written one by one: a guessing attack shows.
    assert rows.filter(action="sign_in.failed", username="guess-0").exists()


def test_refusals_past_the_bound_on_a_real_patient_are_counted_under_that_patient(
    other_clinician, auditor, bound
):
    # The bound burnt first on made-up ids, then a patient out of reach tried: the auditor reading that
    # patient's trail must see it was tried, by whom and how often (not one count naming no patient).
    from patients.models import Patient

    patient, second = Patient.objects.create(label="SYNTH-A"), Patient.objects.create(label="SYNTH-B")
    client = signed_in(other_clinician)
    for n in range(bound):
        assert client.get(f"/patients/{700_000 + n}/").status_code == 404
    for _ in range(3):
        assert client.get(f"/patients/{patient.pk}/").status_code == 404
    assert client.get(f"/patients/{second.pk}/").status_code == 404
    assert client.get("/patients/799999/").status_code == 404
    assert signed_in(auditor).get("/audit/", {"patient": patient.pk}).status_code == 200
    counts = {r.patient_id: r.detail["repeats"] for r in refusals(other_clinician) if "repeats" in r.detail}
    if len(refusals(other_clinician)) - len(counts) == bound:  # (no window boundary crossed mid-test)
        assert counts == {patient.pk: 3, second.pk: 1, None: 1}
    assert _accounted(other_clinician)[1] + len(refusals(other_clinician)) - len(counts) == bound + 5


def test_patients_counted_one_by_one_are_bounded_too(other_clinician, bound):
    from patients.models import Patient

    patients = [Patient.objects.create(label=f"SYNTH-{n}") for n in range(2 * bound + 3)]
    client = signed_in(other_clinician)
    for n in range(bound):
        client.get(f"/patients/{710_000 + n}/")
    for patient in patients:
        assert client.get(f"/patients/{patient.pk}/").status_code == 404
    tallies = list(RepeatTally.objects.values_list("patient_id", "count"))
    if len(refusals(other_clinician)) == bound:  # (no window boundary crossed mid-test)
        assert sum(1 for pid, _ in tallies if pid is not None) == bound
        assert [count for pid, count in tallies if pid is None] == [bound + 3]
