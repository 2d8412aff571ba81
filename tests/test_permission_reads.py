"""A user's permissions, their own and their role's, are read in one query per request (in the query that
reads the signed-in user, for a session or a token), and the answer is the same as Django's own backend
gives; sessions signed in before (through the stock backend) stay signed in."""

from __future__ import annotations

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


def _permission_reads(queries) -> int:
    return sum('"auth_permission"' in q["sql"] for q in queries.captured_queries)


def test_own_and_role_permissions_in_one_query_with_the_stock_answers(clinician, django_user_model):
    direct = Permission.objects.get(codename="view_identifiers")
    clinician.user_permissions.add(direct)  # held by the user itself, not by the Clinicians role
    user = django_user_model.objects.get(pk=clinician.pk)
    with CaptureQueriesContext(connection) as queries:
        held = {
            perm: user.has_perm(perm)
            for perm in (
                "runs.view_run",
                "runs.add_run",
                "patients.view_identifiers",
                "patients.delete_patient",
            )
        }
    assert _permission_reads(queries) == 1
    stock = ModelBackend()
    fresh = django_user_model.objects.get(pk=clinician.pk)
    assert held == {perm: perm in stock.get_all_permissions(fresh) for perm in held}
    assert held["runs.view_run"] and held["patients.view_identifiers"] and not held["patients.delete_patient"]
    assert user.get_all_permissions() == stock.get_all_permissions(fresh)


def test_an_inactive_user_holds_nothing(clinician):
    clinician.is_active = False
    clinician.save()
    assert not clinician.has_perm("runs.view_run")
    assert clinician.get_all_permissions() == set()


def test_a_page_reads_the_permissions_with_the_user(clinician_client):
    clinician_client.get("/")
    with CaptureQueriesContext(connection) as queries:
        assert clinician_client.get("/").status_code == 200
    assert _permission_reads(queries) == 1
    (read,) = [q["sql"] for q in queries.captured_queries if '"auth_permission"' in q["sql"]]
    assert read.startswith('SELECT "auth_user"."id"')  # in the query that reads the signed-in user


def test_a_token_request_reads_the_permissions_with_the_token(api, clinician):
    api.get("/api/patients")  # the token's last use is written once a minute, not on the next call
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/patients").status_code == 200
    (read,) = [q["sql"] for q in queries.captured_queries if '"auth_permission"' in q["sql"]]
    assert read.startswith('SELECT "qeeg_site_apitoken"."id"')


@pytest.mark.parametrize("where", ["own", "role", "none"])
def test_the_permissions_read_with_the_user_are_the_stock_answer(clinician, django_user_model, where):
    from django.contrib.auth.models import Group

    from qeeg_site.auth import PermissionsBackend

    if where == "own":
        clinician.user_permissions.add(Permission.objects.get(codename="view_identifiers"))
    if where == "none":
        clinician.groups.clear()
    else:  # a second role, holding one permission the first does not
        extra = Group.objects.create(name="Extra")
        extra.permissions.add(Permission.objects.get(codename="delete_patient"))
        clinician.groups.add(extra)
    user = PermissionsBackend().get_user(clinician.pk)
    with CaptureQueriesContext(connection) as queries:
        held = user.get_all_permissions()
    assert len(queries) == 0
    assert held == ModelBackend().get_all_permissions(django_user_model.objects.get(pk=clinician.pk))
    assert bool(held) == (where != "none")
    clinician.is_active = False
    clinician.save()
    assert PermissionsBackend().get_user(clinician.pk) is None  # as the stock backend answers


def test_a_session_signed_in_through_the_stock_backend_stays_signed_in(clinician):
    client = Client()
    session = client.session
    session[SESSION_KEY] = str(clinician.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"  # what sessions before hold
    session[HASH_SESSION_KEY] = clinician.get_session_auth_hash()
    session.save()
    client.cookies["sessionid"] = session.session_key
    response = client.get("/")
    assert response.status_code == 200 and response.wsgi_request.user == clinician
    assert response.wsgi_request.user.has_perm("runs.view_run")
    assert not response.wsgi_request.user.has_perm("patients.delete_patient")
