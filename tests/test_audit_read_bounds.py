"""A legitimate read cannot flood the append-only trail either: a script looping over its own patient's page
wrote one row a request (100 a second, for good). In each window the first read of one record (its kind, id
and detail) by one user from one address is a row; the later ones are counted in that read's tally and written
as one count row of the same action, record and detail (audit.bounds.first_read). Nothing is dropped: once
the counts are written (an auditor's read, or the next window's first read), rows and counts add up to every
read exactly. A different record, page, address or user is its own row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

from audit.bounds import _window_start
from audit.models import AuditEvent, RepeatTally
from patients.models import Patient
from runs.models import Run
from tests.access_world import world  # noqa: F401  (the fixture)
from tests.conftest import signed_in, token_client

ADDRESS, OTHER_ADDRESS = "192.0.2.71", "192.0.2.72"
READS = 500


def _reads(user, action: str, **filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(user_id=user.pk, action=action, **filters).order_by("pk"))


def _accounted(rows: list[AuditEvent]) -> tuple[int, int]:
    """(rows one by one, reads in count rows)."""
    counts = [row.detail["repeats"] for row in rows if "repeats" in row.detail]
    return len(rows) - len(counts), sum(counts)


def test_a_loop_over_one_patient_writes_one_row_and_a_count(clinician, auditor, audit_clock, settings):
    _loop(clinician, auditor, audit_clock, settings)


def test_the_same_on_postgresql(django_db_setup, postgres_db, clinician, auditor, audit_clock, settings):
    _loop(clinician, auditor, audit_clock, settings)


def _loop(clinician, auditor, audit_clock, settings) -> None:
    patient = Patient.objects.create(label="SYNTH-LOOP")
    page = signed_in(clinician)
    page.defaults.update(REMOTE_ADDR=ADDRESS, HTTP_USER_AGENT="loop/1.0")
    url = f"/patients/{patient.pk}/"
    for n in range(READS):
        assert page.get(url).status_code == 200
        if n == 299:  # an auditor reads the trail mid-loop: the count so far is written, later ones count on
            assert signed_in(auditor).get("/audit/", {"patient": patient.pk}).status_code == 200
    rows = _reads(clinician, "patient.viewed", patient_id=patient.pk)
    assert _accounted(rows) == (1, 299)  # the first row and the count written at the auditor's read
    assert RepeatTally.objects.get(action="patient.viewed").count == READS - 1
    exported = signed_in(auditor).get("/audit/export.csv", {"action": "patient.viewed"})
    assert exported.status_code == 200 and b"".join(exported.streaming_content).count(b"repeats") == 2
    rows = _reads(clinician, "patient.viewed", patient_id=patient.pk)
    assert len(rows) == 3 and _accounted(rows) == (1, READS - 1)  # every read, each once
    first, *counts = rows
    assert "repeats" not in first.detail and (first.object_type, first.object_id) == (
        "patient",
        str(patient.pk),
    )
    window = _window_start(audit_clock.now).isoformat()
    for count in counts:
        assert (count.object_type, count.object_id, count.patient_id) == (
            "patient",
            str(patient.pk),
            patient.pk,
        )
        assert (count.username, count.ip, count.user_agent) == ("clinician", ADDRESS, "loop/1.0")
        assert count.detail == {
            "repeats": count.detail["repeats"],
            "window_start": window,
            "window_minutes": 10,
        }
    assert [c.detail["repeats"] for c in counts] == [299, READS - 300]
    # Reading the trail again writes nothing more: nothing is counted twice.
    assert signed_in(auditor).get("/audit/").status_code == 200
    assert len(_reads(clinician, "patient.viewed")) == 3


def test_a_different_record_page_address_or_user_is_its_own_row(
    world,  # noqa: F811
    clinician,
    other_clinician,
    audit_clock,
):
    world.patient.clinicians.add(other_clinician)
    second = Patient.objects.create(label="SYNTH-SECOND")
    page = signed_in(clinician)
    page.defaults.update(REMOTE_ADDR=ADDRESS)
    elsewhere = signed_in(clinician)
    elsewhere.defaults.update(REMOTE_ADDR=OTHER_ADDRESS)
    other = signed_in(other_clinician)
    other.defaults.update(REMOTE_ADDR=ADDRESS)
    r = world.report.pk
    for _ in range(3):
        for client, url in [
            (page, f"/patients/{world.patient.pk}/"),
            (page, f"/patients/{second.pk}/"),
            (elsewhere, f"/patients/{world.patient.pk}/"),
            (other, f"/patients/{world.patient.pk}/"),
            (page, f"/reports/{r}/"),
            (page, f"/reports/{r}/pages/1.png"),
            (page, f"/runs/{world.run.pk}/stages/6/"),
            (page, f"/runs/{world.run.pk}/stages/1/"),
        ]:
            assert client.get(url).status_code == 200, url
    one_by_one = [
        (e.username, e.action, e.object_id, e.ip, e.detail)
        for e in AuditEvent.objects.filter(action__endswith="viewed").order_by("pk")
    ]
    p, run = str(world.patient.pk), str(world.run.pk)
    assert one_by_one == [
        ("clinician", "patient.viewed", p, ADDRESS, {}),
        ("clinician", "patient.viewed", str(second.pk), ADDRESS, {}),
        ("clinician", "patient.viewed", p, OTHER_ADDRESS, {}),
        ("other-clinician", "patient.viewed", p, ADDRESS, {}),
        ("clinician", "report.viewed", str(r), ADDRESS, {}),
        ("clinician", "report.viewed", str(r), ADDRESS, {"part": "page", "page": 1}),
        ("clinician", "artifact.viewed", run, ADDRESS, {"stage": 6}),
        ("clinician", "artifact.viewed", run, ADDRESS, {"stage": 1}),
    ]
    # Each of those eight reads was made twice more: eight tallies of two, written as eight count rows.
    assert sorted(RepeatTally.objects.values_list("count", flat=True)) == [2] * 8
    from audit.bounds import write_counts

    assert write_counts() == 8
    counts = AuditEvent.objects.filter(detail__has_key="repeats").order_by("pk")
    assert [(e.username, e.action, e.object_id, e.ip, e.detail["repeats"]) for e in counts] == [
        (name, action, object_id, ip, 2) for name, action, object_id, ip, _ in one_by_one
    ]
    assert [
        {k: v for k, v in e.detail.items() if not k.startswith(("repeats", "window"))} for e in counts
    ] == [detail for *_, detail in one_by_one]


def test_a_new_window_starts_with_a_row_and_writes_the_past_windows_count(clinician, audit_clock):
    patient = Patient.objects.create(label="SYNTH-WINDOW")
    api = token_client(clinician)
    for _ in range(4):
        assert api.get(f"/api/patients/{patient.pk}").status_code == 200
    first_window = _window_start(audit_clock.now)
    assert _accounted(_reads(clinician, "patient.viewed")) == (1, 0)  # three counted, not yet written
    audit_clock.advance(minutes=10)
    assert api.get(f"/api/patients/{patient.pk}").status_code == 200
    rows = _reads(clinician, "patient.viewed")
    # The new window's first read is a row; the past window's three are written as its count on the way.
    assert [(r.detail.get("repeats"), r.detail.get("window_start")) for r in rows] == [
        (None, None),
        (3, first_window.isoformat()),
        (None, None),
    ]
    # The past window's tally is gone once written; the new window's first read made its own (count 0).
    assert list(RepeatTally.objects.values_list("window", "count")) == [(_window_start(audit_clock.now), 0)]


def test_a_past_windows_counts_are_shared_by_the_next_windows_first_reads(clinician, audit_clock):
    """No one request writes them all: a clinic's repeated reads of a window may be thousands of tallies."""
    from audit import bounds

    past = _window_start(audit_clock.now) - timedelta(minutes=10)
    RepeatTally.objects.bulk_create(
        RepeatTally(
            action="patient.viewed",
            who=f"user:{clinician.pk}:read:{n}",
            window=past,
            count=2,
            user_id=clinician.pk,
            username="clinician",
            patient_id=n,
            object_type="patient",
            object_id=str(n),
        )
        for n in range(1, 2 * bounds.COUNTS_PER_READ + 6)
    )
    patients = [Patient.objects.create(label=f"SYNTH-{n}") for n in range(4)]
    page = signed_in(clinician)
    written = []
    for patient in patients:
        assert page.get(f"/patients/{patient.pk}/").status_code == 200
        written.append(AuditEvent.objects.filter(detail__has_key="repeats").count())
    assert written == [10, 20, 25, 25]
    assert page.get(f"/patients/{patients[0].pk}/").status_code == 200  # a repeat: counted, nothing written
    counts = AuditEvent.objects.filter(detail__has_key="repeats").order_by("pk")
    assert [(c.object_id, c.detail["repeats"]) for c in counts] == [(str(n), 2) for n in range(1, 26)]
    assert not RepeatTally.objects.filter(window=past).exists()  # written, then dropped


def test_the_first_read_makes_the_tally_and_each_later_one_adds_one(clinician, audit_clock):
    from audit.bounds import first_read

    def read(ip: str = ADDRESS, **detail) -> bool:
        return first_read(
            "report.viewed",
            clinician,
            ip,
            "agent",
            object_type="report",
            object_id="7",
            patient_id=3,
            detail=detail,
        )

    assert [read(), read(), read(), read(page=2), read(OTHER_ADDRESS), read(page=2)] == [
        True,
        False,
        False,
        True,
        True,
        False,
    ]
    assert sorted(RepeatTally.objects.values_list("count", "detail")) == [(0, {}), (1, {"page": 2}), (2, {})]


def test_exports_are_not_reached_by_head(world, clinician):  # noqa: F811
    """Making an export (the PDF rendered and stored) is an action, `run.exported` or
    `patient_version.exported`, and only a POST does it: a HEAD is answered as GET (qeeg_site/head.py), which
    every export route refuses with 405, so a HEAD renders nothing and writes no export row."""
    run = world.run
    page, api = signed_in(clinician), token_client(clinician)
    before = sorted(p.name for p in run.exports_dir.iterdir())
    for client, url in [
        (page, f"/runs/{run.pk}/export/"),
        (page, f"/runs/{run.pk}/patient-version/export/"),
        (api, f"/api/runs/{run.pk}/export"),
        (api, f"/api/runs/{run.pk}/patient-version/export"),
    ]:
        assert client.head(url).status_code == 405, url
    assert not AuditEvent.objects.filter(action__endswith="exported").exists()
    assert sorted(p.name for p in run.exports_dir.iterdir()) == before
    # What a POST does for the same run: it renders and records (the HEAD above was refused, not broken).
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
    assert [e.action for e in AuditEvent.objects.filter(action__endswith="exported")] == ["run.exported"]
    assert Run.EXPORT_PDF in [p.name for p in run.exports_dir.iterdir()]


@pytest.mark.parametrize("method", ["get", "head"])
def test_an_anonymous_read_writes_nothing(world, method):  # noqa: F811
    response = getattr(Client(), method)(f"/patients/{world.patient.pk}/")
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(action__endswith="viewed").exists()
    assert not RepeatTally.objects.exists()
