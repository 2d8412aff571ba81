"""Every page and API endpoint needs a signed-in user or a bearer token; health says nothing of patients."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command

from qeeg_site.models import ApiToken, hash_token


def test_pages_redirect_anonymous_to_sign_in(outsider, db):
    response = outsider.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_api_refuses_anonymous_with_json_401(outsider, db):
    response = outsider.get("/api/patients")
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"]


def test_api_refuses_an_unknown_token(db):
    from django.test import Client

    response = Client(headers={"Authorization": "Bearer qc_not-a-token"}).get("/api/patients")
    assert response.status_code == 401


def test_signed_in_clinician_sees_pages(clinician_client):
    assert clinician_client.get("/").status_code == 200


def test_createapitoken_prints_a_token_and_stores_only_its_hash(clinician, capsys):
    call_command("createapitoken", "clinician")
    token = capsys.readouterr().out.strip()
    assert token.startswith("qc_")
    row = ApiToken.objects.get(user=clinician)
    assert row.token_hash == hash_token(token)
    assert token not in (row.token_hash, row.prefix)


def test_bearer_token_authenticates_api_calls(api):
    assert api.get("/api/patients").status_code == 200


@pytest.mark.parametrize("path", ["/api/docs", "/api/openapi.json"])
def test_api_docs_need_a_user_or_a_token(outsider, clinician_client, api, path):
    response = outsider.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/api/")
    assert clinician_client.get(path).status_code == 200
    assert api.get(path).status_code == 200


def test_token_last_use_is_written_at_most_once_a_minute(api, api_token):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def updates() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert api.get("/api/patients").status_code == 200
        return sum(q["sql"].startswith('UPDATE "qeeg_site_apitoken"') for q in queries.captured_queries)

    assert updates() == 1
    first_use = ApiToken.objects.get().last_used_at
    assert updates() == 0
    ApiToken.objects.update(last_used_at=first_use - timedelta(minutes=2))
    assert updates() == 1
