"""A NUL character or half of a surrogate pair is refused with a 422 and the reason, before any view reads it:
a NUL in a search made SQLite's FTS5 index answer 500 ("unterminated string"), in any parameter, JSON field or
search on PostgreSQL a 500 (its text cannot hold one), and a lone surrogate in a saved write-up a 500 (no
UTF-8 for it). Text that merely looks like one (an escaped backslash, an accent, an emoji) is not refused."""

from __future__ import annotations

import pytest
from django.db import connection

from patients.models import Patient
from qeeg_site.models import ApiToken
from runs.models import DraftVersion, RunEvent
from tests.conftest import signed_in, token_client

NUL_SEARCH = "P-0\x0042"


def _refused(response) -> bool:
    return response.status_code == 422 and "NUL" in response.content.decode()


def _tried(world, staff, clinician) -> None:
    api = token_client(staff)
    assert _refused(api.get("/api/patients", {"q": NUL_SEARCH}))
    assert api.get("/api/patients", {"q": NUL_SEARCH}).json()["detail"].startswith("The request holds")
    assert _refused(signed_in(staff).get("/", {"q": NUL_SEARCH}))
    assert _refused(api.get("/api/patients", {"q": "abc", "page\x00": "1"}))
    for label in ('"X-\\u0000-Y"', '"X-\\ud800-Y"', '"X-\\udfff"'):
        body = '{"label": ' + label + "}"
        assert _refused(api.post("/api/patients", body, content_type="application/json")), label
    # django-ninja reads a body as JSON whatever its Content-Type says (a 500 on PostgreSQL, as any of these).
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/octet-stream", ""):
        body = '{"label": "X-\\u0000-Y"}'
        assert _refused(api.post("/api/patients", body, content_type=content_type)), content_type
    assert not Patient.objects.filter(label__startswith="X-").exists()
    own, versions = token_client(clinician), DraftVersion.objects.count()
    body = '{"text": "# Edited \\ud800 draft"}'
    assert _refused(own.post(f"/api/runs/{world.run.pk}/versions", body, content_type="application/json"))
    nested = '{"text": "ok", "more": {"deep": ["\\u0000"]}}'
    assert _refused(own.post(f"/api/runs/{world.run.pk}/versions", nested, content_type="application/json"))
    assert DraftVersion.objects.count() == versions
    # What only looks like one: an escaped backslash before "u0000", an accent, an emoji (a whole pair).
    for label, stored in (
        ('"X-\\\\u0000"', "X-\\u0000"),
        ('"X-Caf\\u00e9"', "X-Café"),
        ('"X-\\ud83d\\ude00"', "X-😀"),
    ):
        response = api.post("/api/patients", '{"label": ' + label + "}", content_type="application/json")
        assert response.status_code == 201, (label, response.content)
        assert Patient.objects.filter(label=stored).exists()
    assert api.get("/api/patients", {"q": "Café"}).status_code == 200


def _form_posts(world, clinician) -> None:
    """Form posts whose views read their fields without a Django form: a NUL in a token's name was a 500 on
    PostgreSQL (stored as is on SQLite), in a write-up's text saved as is. Multipart (the test client's and
    the browser's for uploads) and urlencoded (the browser's for every other form) alike."""
    page = signed_in(clinician)
    tokens, versions, events = (
        ApiToken.objects.count(),
        DraftVersion.objects.count(),
        RunEvent.objects.count(),
    )
    assert _refused(page.post("/account/tokens/", {"name": "cli\x00ent", "days": "3"}))
    body = "name=cli%00ent&days=3"
    assert _refused(page.post("/account/tokens/", body, content_type="application/x-www-form-urlencoded"))
    assert _refused(page.post(f"/runs/{world.run.pk}/write-up/save/", {"text": "# Edited\x00 draft"}))
    assert _refused(page.post(f"/runs/{world.run.pk}/drop/", {"model": "m", "reason": "why\x00"}))
    assert _refused(page.post("/account/tokens/", {"name\x00": "client", "days": "3"}))  # a field's name too
    assert (ApiToken.objects.count(), DraftVersion.objects.count(), RunEvent.objects.count()) == (
        tokens,
        versions,
        events,
    )
    # The same form without it is taken.
    assert page.post("/account/tokens/", {"name": "client", "days": "3"}).status_code == 201
    assert ApiToken.objects.filter(name="client").exists()


def test_a_nul_or_a_lone_surrogate_is_a_422_not_a_500(world, staff, clinician):
    assert connection.vendor == "sqlite"
    _tried(world, staff, clinician)
    _form_posts(world, clinician)


def test_the_same_on_postgresql(django_db_setup, postgres_db, world, staff, clinician):
    assert connection.vendor == "postgresql"
    _tried(world, staff, clinician)
    _form_posts(world, clinician)


@pytest.mark.parametrize("path", ["/api/patients/1\x00", "/patients/\x00/"])
def test_a_nul_in_the_path_is_refused_too(staff, path):
    assert _refused(signed_in(staff).get(path))
