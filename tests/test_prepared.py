"""qeeg_site.prepared: a query compiled once answers, for each call's values, what the queryset built with
those values answers: the same SQL and parameters, the same rows, instances, related objects and annotations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patients.models import Patient, Report
from qeeg_site.auth import with_perms
from qeeg_site.models import ApiToken, hash_token
from qeeg_site.prepared import Prepared


def _tokens(token_hash):
    return with_perms(ApiToken.objects.select_related("user").filter(token_hash=token_hash), "user_id")[:1]


def _reports(patient_id, name):
    rows = Report.objects.filter(patient_id=patient_id, original_name=name).annotate(
        n=Count("patient__reports")
    )
    return rows.order_by("pk").values("pk", "original_name", "n", label=F("patient__label"))


def _same_queries(prepared: Prepared, make, *values) -> list:
    prepared(*values)  # compiled (the database's features read once, as any first query does)
    with CaptureQueriesContext(connection) as asked:
        got = prepared(*values)
    with CaptureQueriesContext(connection) as built:
        expected = list(make(*values))
    assert [q["sql"] for q in asked] == [q["sql"] for q in built]
    return got, expected


def _check(clinician, staff) -> None:
    tokens = Prepared(_tokens, ApiToken._meta.get_field("token_hash"))
    issued = {user.pk: ApiToken.issue(user=user, name="t")[1] for user in (clinician, staff)}
    for user in (clinician, staff, clinician):
        got, expected = _same_queries(tokens, _tokens, hash_token(issued[user.pk]))
        assert [row.pk for row in got] == [row.pk for row in expected] and len(got) == 1
        row = got[0]
        assert row.user == user and row.user.username == user.username  # select_related, no query
        assert row.perms_read == expected[0].perms_read and row.created_at == expected[0].created_at
        assert ApiToken.objects.get(pk=row.pk).__dict__.keys() <= row.__dict__.keys()
    assert tokens(hash_token("no such token")) == []

    reports = Prepared(_reports, Report._meta.get_field("patient"), Report._meta.get_field("original_name"))
    one, two = Patient.objects.create(label="SYNTH-1"), Patient.objects.create(label="SYNTH-2")
    for patient, name in ((one, "a.pdf"), (one, "a.pdf"), (one, "b.pdf"), (two, "a.pdf")):
        Report.objects.create(patient=patient, original_name=name, sha256=f"{Report.objects.count():064x}")
    for patient, name in ((one, "a.pdf"), (two, "a.pdf"), (one, "b.pdf"), (two, "c.pdf")):
        got, expected = _same_queries(reports, _reports, patient.pk, name)
        assert got == expected
    from django.contrib.sessions.backends.db import SessionStore as DjangosStore

    from qeeg_site.sessions import SessionStore

    made = DjangosStore()
    made["k"] = "v"
    made.create()
    assert SessionStore(made.session_key).load() == {"k": "v"} and SessionStore("nothing").load() == {}
    assert [r["n"] for r in reports(one.pk, "a.pdf")] == [3, 3] and reports(two.pk, "a.pdf")[0][
        "label"
    ] == "SYNTH-2"


@pytest.mark.django_db
def test_a_prepared_query_answers_what_the_queryset_answers(clinician, staff):
    _check(clinician, staff)


def test_a_prepared_query_answers_what_the_queryset_answers_on_postgresql(postgres_db, clinician, staff):
    _check(clinician, staff)


@pytest.mark.django_db
def test_its_sql_is_compiled_once(clinician, monkeypatch):
    from django.db.models.sql.compiler import SQLCompiler

    users = Prepared(lambda pk: get_user_model().objects.filter(pk=pk)[:1], get_user_model()._meta.pk)
    users(clinician.pk)
    compiled = []
    as_sql = SQLCompiler.as_sql
    monkeypatch.setattr(
        SQLCompiler, "as_sql", lambda self, *a, **k: compiled.append(1) or as_sql(self, *a, **k)
    )
    assert users(clinician.pk) == [clinician] and users(clinician.pk + 1000) == []
    assert compiled == []


@pytest.mark.django_db
def test_a_value_the_lookup_rewrites_cannot_be_a_placeholder():
    # `contains` asks for "%value%": the placeholder is nowhere in the parameters as written.
    searched = Prepared(lambda q: Patient.objects.filter(label__contains=q), Patient._meta.get_field("label"))
    with pytest.raises(ValueError, match="placeholder is not a parameter"):
        searched("x")


@pytest.mark.django_db
def test_a_value_is_prepared_as_its_field_prepares_it(clinician):
    users = Prepared(lambda pk: get_user_model().objects.filter(pk=pk)[:1], get_user_model()._meta.pk)
    assert users(str(clinician.pk)) == [clinician]  # a session keeps the id as text
    with pytest.raises((ValueError, TypeError)):
        users("not a number")


@pytest.mark.django_db
def test_a_session_is_read_as_djangos_store_reads_it(clinician, client):
    from django.contrib.sessions.backends.db import SessionStore as DjangosStore
    from django.contrib.sessions.models import Session

    from qeeg_site.sessions import SessionStore

    client.force_login(clinician)
    key = client.session.session_key
    assert SessionStore(key).load() == DjangosStore(key).load() != {}
    for missing in ("no-such-session-key-000000000000", None):
        store = SessionStore(missing)
        assert store.load() == {} and store.session_key is None
    Session.objects.filter(pk=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    store = SessionStore(key)
    assert store.load() == {} == DjangosStore(key).load() and store.session_key is None  # expired
    assert client.get("/").status_code == 302  # signed out: to the sign-in page
