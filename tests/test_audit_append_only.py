"""The audit trail is append-only in the database itself: UPDATE and DELETE raise, whatever the caller."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

import audit
from audit.models import AuditEvent


@pytest.fixture
def event(clinician) -> AuditEvent:
    return audit.record(clinician, "sign_in", clinician)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET action = 'sign_out'",
        "UPDATE audit_auditevent SET username = 'someone else' WHERE id = %s",
        "DELETE FROM audit_auditevent",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ],
)
def test_the_database_refuses_to_change_or_remove_a_row(event, sql):
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [event.pk] if "%s" in sql else None)
    event.refresh_from_db()
    assert (event.action, event.username) == ("sign_in", "clinician")


def _rewritten(event: AuditEvent, verb: str) -> str:
    """SQL that writes the row `event` again under its own id with another username (SQLite's REPLACE deletes
    the row in the way without firing DELETE triggers, unless recursive triggers are on)."""
    columns = [field.column for field in AuditEvent._meta.concrete_fields]
    values = ["'someone else'" if column == "username" else column for column in columns]
    return f"{verb} INTO audit_auditevent ({', '.join(columns)}) SELECT {', '.join(values)} FROM audit_auditevent"


@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "REPLACE"])
def test_sqlite_refuses_a_row_written_again_under_its_id(event, verb):
    if connection.vendor != "sqlite":
        pytest.skip("REPLACE is SQLite's; PostgreSQL's upsert is an UPDATE, refused above")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(_rewritten(event, verb) + " WHERE id = %s", [event.pk])
    event.refresh_from_db()
    assert event.username == "clinician" and AuditEvent.objects.count() == 1


def test_the_orm_cannot_either(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="sign_out")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(PermissionError):
        event.delete()
    event.action = "sign_out"
    with pytest.raises(PermissionError):
        event.save()
    assert AuditEvent.objects.get().action == "sign_in"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET action = 'sign_out'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
    ],
)
def test_postgresql_refuses_too_truncate_included(postgres_db, django_user_model, sql):
    user = django_user_model.objects.create_user(username="pg-clinician")
    audit.record(user, "sign_in", user)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    assert connection.vendor == "postgresql"
    assert AuditEvent.objects.get().action == "sign_in"


def test_appending_still_works_and_keeps_order(clinician):
    first = audit.record(clinician, "sign_in", clinician)
    second = audit.record(clinician, "sign_out", clinician)
    assert list(AuditEvent.objects.values_list("pk", flat=True)) == [second.pk, first.pk]
