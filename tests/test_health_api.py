"""/api/health and /api/models against the fake CLIProxyAPI: with and without a key, and stopped."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from council.health import forget_cached_health


@pytest.fixture(autouse=True)
def fresh_health_cache():
    forget_cached_health()
    yield
    forget_cached_health()


@pytest.mark.django_db
def test_health_tells_the_public_ok_and_nothing_else(outsider, fake_upstream):
    reply = outsider.get("/api/health")
    assert (reply.status_code, reply.json()) == (200, {"ok": True})


@pytest.mark.django_db
def test_health_tells_the_public_only_not_ok_when_the_upstream_is_down(outsider, fake_upstream):
    fake_upstream.stop()
    for client in (outsider, Client(headers={"Authorization": "Bearer not-a-token"})):
        reply = client.get("/api/health")
        # Not where the upstream lives, not why: that is for signed-in users.
        assert (reply.status_code, reply.json()) == (503, {"ok": False})
        assert "127.0.0.1" not in reply.content.decode()


@pytest.mark.django_db
def test_health_gives_details_to_a_token_client_and_a_session(api, clinician_client, fake_upstream):
    for client in (api, clinician_client):
        reply = client.get("/api/health")
        assert reply.status_code == 200
        body = reply.json()
        assert body["ok"] is True and body["reachable"] is True and body["problem"] is None
        assert body["models_discovered"] == len(fake_upstream.models_listing()["data"])
        assert body["hint"]
        # Still nothing about model names or patients.
        assert set(body) == {"ok", "reachable", "problem", "models_discovered", "hint"}
        assert "gpt-5" not in reply.content.decode()


@pytest.mark.django_db
def test_health_with_a_key(api, fake_upstream, settings):
    fake_upstream.set_api_keys(["sekret"])
    settings.CLIPROXY_API_KEY = "sekret"
    assert api.get("/api/health").json()["ok"] is True
    assert fake_upstream.calls[-1].authorization == "Bearer sekret"


@pytest.mark.django_db
def test_health_reports_missing_or_wrong_key_as_unauthorized(api, fake_upstream, settings):
    fake_upstream.set_api_keys(["sekret"])
    missing = api.get("/api/health")
    assert missing.status_code == 503
    assert missing.json()["problem"] == "unauthorized"
    assert missing.json()["reachable"] is True
    assert "CLIPROXY_API_KEY" in missing.json()["hint"]
    settings.CLIPROXY_API_KEY = "wrong"
    assert api.get("/api/health").json()["problem"] == "unauthorized"


@pytest.mark.django_db
def test_health_reports_a_stopped_upstream_within_seconds(api, fake_upstream, settings):
    settings.CLIPROXY_HEALTH_CACHE_SECONDS = 0.5
    assert api.get("/api/health").json()["ok"] is True
    fake_upstream.stop()
    time.sleep(0.6)
    started = time.monotonic()
    reply = api.get("/api/health")
    assert time.monotonic() - started < 3
    assert reply.status_code == 503
    body = reply.json()
    assert (body["reachable"], body["problem"], body["models_discovered"]) == (False, "connection_refused", 0)
    assert "CLIPROXY_BASE_URL" in body["hint"]


@pytest.mark.django_db
def test_health_reports_a_hanging_upstream_as_timeout(api, settings):
    import socket

    # A socket that accepts connections but never answers: the check must give up after its short timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    settings.CLIPROXY_BASE_URL = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings.CLIPROXY_HEALTH_TIMEOUT = 0.5
    try:
        started = time.monotonic()
        body = api.get("/api/health").json()
        assert time.monotonic() - started < 3
    finally:
        listener.close()
    assert (body["reachable"], body["problem"]) == (False, "timeout")


@pytest.mark.django_db
def test_health_reports_something_else_as_bad_response(api, fake_upstream, settings):
    settings.CLIPROXY_BASE_URL = fake_upstream.base_url + "/not-here"
    body = api.get("/api/health").json()
    assert (body["reachable"], body["problem"]) == (True, "bad_response")


@pytest.mark.django_db
def test_health_with_no_models_says_to_sign_in(api, fake_upstream):
    for model in [c["id"] for c in fake_upstream.models_listing()["data"]]:
        fake_upstream.remove_model(model)
    body = api.get("/api/health").json()
    assert body["problem"] == "no_models"
    assert "sign in" in body["hint"]


@pytest.mark.django_db
def test_health_result_is_cached_briefly(api, fake_upstream, settings):
    settings.CLIPROXY_HEALTH_CACHE_SECONDS = 30
    for _ in range(5):
        api.get("/api/health")
    assert fake_upstream.count(endpoint="models") == 1


@pytest.mark.django_db
def test_models_needs_sign_in(outsider, fake_upstream):
    assert outsider.get("/api/models").status_code == 401


@pytest.mark.django_db
def test_models_reports_council_discovered_and_availability(api, fake_upstream, settings):
    settings.COUNCIL_MODELS = ["gpt-5", "claude-sonnet-4-5", "gpt-5o"]
    settings.COUNCIL_CONSOLIDATOR = "claude-sonnet-4-5"
    fake_upstream.script("gpt-5o-mini")  # a similar id must not stand in for the configured one
    body = api.get("/api/models").json()
    assert body["council"] == [
        {"id": "gpt-5", "available": True},
        {"id": "claude-sonnet-4-5", "available": True},
        {"id": "gpt-5o", "available": False},
    ]
    assert body["consolidator"] == {"id": "claude-sonnet-4-5", "available": True}
    discovered = {m["id"]: m for m in body["discovered"]}
    assert {"gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro", "gpt-5o-mini"} <= set(discovered)
    assert discovered["claude-sonnet-4-5"]["created"] is None
    assert discovered["gpt-5"]["owned_by"] == "openai"
    assert body["upstream"]["ok"] is True


@pytest.mark.django_db
def test_models_against_a_stopped_upstream(api, fake_upstream):
    fake_upstream.stop()
    started = time.monotonic()
    reply = api.get("/api/models")
    assert time.monotonic() - started < 3
    assert reply.status_code == 200
    body = reply.json()
    assert body["discovered"] == []
    assert all(not m["available"] for m in body["council"])
    assert body["consolidator"]["available"] is False
    assert body["upstream"]["problem"] == "connection_refused"
    assert "refused" in body["upstream"]["message"]


@pytest.mark.django_db
def test_a_base_url_without_its_scheme_is_a_problem_not_a_server_error(api, settings):
    settings.CLIPROXY_BASE_URL = "127.0.0.1:8317"
    reply = api.get("/api/health")
    assert reply.status_code == 503
    assert reply.json()["problem"] == "connection_refused" and "CLIPROXY_BASE_URL" in reply.json()["hint"]
