"""A user's permissions, their own and their role's, are read in one query per request, and the answer is the
same as Django's own backend gives; sessions signed in before (through the stock backend) stay signed in."""

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


def test_a_page_reads_the_permissions_once(clinician_client):
    clinician_client.get("/")
    with CaptureQueriesContext(connection) as queries:
        assert clinician_client.get("/").status_code == 200
    assert _permission_reads(queries) == 1


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
