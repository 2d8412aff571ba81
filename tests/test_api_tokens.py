"""API tokens: a name, an expiry, last use, revocation; listed, made (shown once) and revoked by their owner
on the account page and through the API; an expired or revoked token signs nothing in and is told why."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from qeeg_site.models import ApiToken
from qeeg_site.tokens import token_issue
from tests.conftest import signed_in


def bearer(token: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {token}"})


def test_a_token_expires_after_the_default_days(clinician, settings):
    settings.API_TOKEN_DAYS = 90
    row, token = token_issue(user=clinician, name="lab script")
    assert timedelta(days=89, hours=23) < row.expires_at - timezone.now() <= timedelta(days=90)
    assert bearer(token).get("/api/patients").status_code == 200
    ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = bearer(token).get("/api/patients")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_a_revoked_token_is_refused_and_says_so(clinician):
    row, token = token_issue(user=clinician)
    signed_in(clinician).post(f"/account/tokens/{row.pk}/revoke/")
    response = bearer(token).get("/api/patients")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_the_account_page_shows_a_new_token_once_and_lists_it_after(clinician_client):
    response = clinician_client.post("/account/tokens/", {"name": "export script", "days": "30"})
    assert response.status_code == 201
    token = re.search(r'<code class="token">(qc_[^<]+)</code>', response.content.decode()).group(1)
    assert bearer(token).get("/api/patients").status_code == 200
    listing = clinician_client.get("/account/tokens/").content.decode()
    assert "export script" in listing and token not in listing and token[:10] in listing
    row = ApiToken.objects.get(name="export script")
    assert timedelta(days=29) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert row.last_used_at is not None  # it was used above


@pytest.mark.parametrize("days", ["0", "100000", "soon"])
def test_an_expiry_out_of_range_is_refused_with_the_range(clinician_client, days):
    response = clinician_client.post("/account/tokens/", {"name": "x", "days": days})
    assert response.status_code == 422
    assert "A token lasts 1 to 365 days" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_nobody_revokes_or_sees_another_users_token(clinician, staff):
    row, token = token_issue(user=staff, name="staff only")
    client = signed_in(clinician)
    assert client.post(f"/account/tokens/{row.pk}/revoke/").status_code == 404
    assert "staff only" not in client.get("/account/tokens/").content.decode()
    assert bearer(token).get("/api/patients").status_code == 200


def test_the_api_lists_creates_and_revokes_the_callers_own_tokens(api, clinician, staff):
    token_issue(user=staff, name="not yours")
    created = api.post("/api/tokens", {"name": "second", "days": 7}, content_type="application/json")
    assert created.status_code == 201
    body = created.json()
    assert body["token"].startswith("qc_") and body["state"] == "active"
    names = [row["name"] for row in api.get("/api/tokens").json()]
    assert sorted(names) == ["second", "tests"]
    revoked = api.post(f"/api/tokens/{body['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert bearer(body["token"]).get("/api/patients").status_code == 401
    other = ApiToken.objects.get(name="not yours")
    assert api.post(f"/api/tokens/{other.pk}/revoke").status_code == 404


def test_createapitoken_takes_a_name_and_days(clinician, capsys):
    call_command("createapitoken", "clinician", "--name", "cron", "--days", "3")
    token = capsys.readouterr().out.strip()
    row = ApiToken.objects.get(name="cron")
    assert bearer(token).get("/api/patients").status_code == 200
    assert timedelta(days=2, hours=23) < row.expires_at - timezone.now() <= timedelta(days=3)
    with pytest.raises(CommandError, match="1 to 365 days"):
        call_command("createapitoken", "clinician", "--days", "0")
