"""Sign-in: failed sign-ins lock the account (and the address) until the cool-off passes or an administrator
lifts the lock, on the login page and the admin's; an idle session is signed out on top of the absolute age."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.test import Client

from tests.conftest import signed_in, token_client

PASSWORD = "clinician-pass-123"


def _sign_in(client: Client, password: str, url: str = "/login/"):
    return client.post(url, {"username": "clinician", "password": password})


def test_five_failures_lock_the_account_even_for_the_right_password(clinician, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = _sign_in(client, "wrong")
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    locked = _sign_in(client, "wrong")
    assert locked.status_code == 429
    assert "Sign-in locked" in locked.content.decode()
    right = _sign_in(Client(), PASSWORD)
    assert right.status_code == 429, "the right password must not get through a lock"
    assert "_auth_user_id" not in right.client.session


def test_an_administrator_lifts_the_lock_in_the_admin(clinician, administrator, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _sign_in(Client(), "wrong")
    assert _sign_in(Client(), PASSWORD).status_code == 429
    admin = signed_in(administrator)
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "clinician" in listing.content.decode()
    ids = [str(pk) for pk in AccessAttempt.objects.values_list("pk", flat=True)]
    lifted = admin.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )
    assert lifted.status_code == 302
    assert not AccessAttempt.objects.exists()
    response = _sign_in(Client(), PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"


def test_the_admin_sign_in_is_locked_by_the_same_count(clinician, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _sign_in(Client(), "wrong", "/admin/login/")
    assert _sign_in(Client(), PASSWORD).status_code == 429


def test_a_success_before_the_limit_starts_the_count_again(clinician, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _sign_in(Client(), "wrong")
    assert _sign_in(Client(), PASSWORD).status_code == 302
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _sign_in(Client(), "wrong")
    assert _sign_in(Client(), PASSWORD).status_code == 302


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("qeeg_site.auth.time.time", clock)
    return clock


def test_an_idle_session_is_signed_out(clinician_client, clock, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    assert clinician_client.get("/").status_code == 200
    clock.now += 901
    response = clinician_client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert "_auth_user_id" not in clinician_client.session
    # Signed out for good, not just for one request; the API says so in JSON.
    assert clinician_client.get("/api/patients").status_code == 401
    page = clinician_client.get("/login/").content.decode()
    assert "signed out after 15 minutes without activity" in page


def test_the_idle_clock_starts_at_sign_in(clinician, clock, settings):
    """A session signed in and then left: its first request came after the timeout and still passed (it only
    started the clock), and a live stream opened first was never cut for idleness."""
    from qeeg_site.auth import _session_still_signed_in

    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    client = Client()
    assert (
        client.post("/login/", {"username": "clinician", "password": "clinician-pass-123"}).status_code == 302
    )
    clock.now += 901
    reason, _ = _session_still_signed_in(client.session.session_key, clinician.pk)
    assert reason == "You were signed out after 15 minutes without activity."
    assert client.get("/api/patients").status_code == 401
    # A bearer token's request signs nobody in to a session, and makes none.
    response = token_client(clinician).get("/api/patients")
    assert response.status_code == 200 and settings.SESSION_COOKIE_NAME not in response.cookies


def test_activity_keeps_the_session_alive(clinician_client, clock, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    for _ in range(4):
        assert clinician_client.get("/").status_code == 200
        clock.now += 800
    assert clinician_client.get("/").status_code == 200


def test_an_htmx_request_after_the_timeout_sends_the_whole_page_to_sign_in(clinician_client, clock, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    assert clinician_client.get("/").status_code == 200
    clock.now += 901
    response = clinician_client.get(
        "/?q=x", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/"}
    )
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login/?next=")
