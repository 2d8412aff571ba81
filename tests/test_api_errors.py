"""Every /api/ error is JSON with a readable `detail`, and out-of-range input is a 4xx, never a 500."""

from __future__ import annotations

import pytest
from django.test import Client

from patients import services
from qeeg_site.models import ApiToken

HUGE = 9223372036854775807  # 2^63 - 1: fine as an int, an OFFSET overflow once multiplied by a page size
HUGER = 2**70  # past what SQLite or PostgreSQL hold at all


def _json_error(reply, status: int) -> str:
    assert reply.status_code == status, reply.content[:300]
    assert reply["Content-Type"].startswith("application/json"), reply["Content-Type"]
    # The length sent is the length of what is sent: daphne cuts a longer body at the Content-Length of the
    # page it replaced, and the rest is read as the next response on a kept-alive connection.
    if reply.has_header("Content-Length"):
        assert int(reply["Content-Length"]) == len(reply.content), (reply["Content-Length"], reply.content)
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


@pytest.mark.django_db
@pytest.mark.parametrize("page", [HUGE, 2, 10**30])
def test_a_page_past_the_last_is_a_422_with_a_message(api, clinician, page):
    services.patient_create(label="P-1", user=clinician)
    detail = _json_error(api.get(f"/api/patients?page={page}"), 422)
    assert f"page {page} is past the last page (1" in detail


@pytest.mark.django_db
def test_pages_in_range_still_answer(api, clinician):
    for n in range(3):
        services.patient_create(label=f"P-{n}", user=clinician)
    body = api.get("/api/patients?page=2&page_size=2").json()
    assert body["count"] == 3 and [p["label"] for p in body["items"]] == ["P-2"]
    # An empty list has a page 1, so a client can always ask for it.
    patient = services.patient_create(label="no reports", user=clinician)
    assert api.get(f"/api/patients/{patient.pk}/reports?page=1").json() == {"items": [], "count": 0}
    _json_error(api.get(f"/api/patients/{patient.pk}/reports?page={HUGE}"), 422)


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["page=0", "page=-5", "page=abc", "page_size=0"])
def test_a_page_out_of_range_below_is_a_422(api, query):
    _json_error(api.get(f"/api/patients?{query}"), 422)


@pytest.mark.django_db
@pytest.mark.parametrize("size", [101, 100_000, 10**30])
def test_a_page_size_past_the_most_a_page_holds_is_a_422_not_a_smaller_page(api, size):
    assert _json_error(api.get(f"/api/patients?page_size={size}"), 422) == (
        f"page_size {size} is more than a page holds (at most 100)."
    )
    assert api.get("/api/patients?page_size=100").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/api/patients/-1", "/api/reports/-7/text", "/api/patients/-1/reports", "/api/nothing-here"]
)
def test_an_address_no_route_matches_is_a_json_404(api, path):
    assert path in _json_error(api.get(path), 404)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        f"/api/patients/{HUGER}",
        f"/api/reports/{HUGER}",
        f"/api/runs/{HUGER}",
        f"/api/runs/{HUGER}/artifacts",
        f"/api/patients/{HUGER}/runs",
    ],
)
def test_an_id_past_what_the_database_holds_is_a_json_404(api, path):
    # Django matches no row for an integer the column cannot hold, so this is "not found", not a 500.
    _json_error(api.get(path), 404)


@pytest.mark.django_db
def test_a_body_id_past_what_the_database_holds_is_a_422(api):
    reply = api.post("/api/runs", {"patient_id": HUGER, "report_id": 1}, content_type="application/json")
    assert "no patient" in _json_error(reply, 422)


@pytest.mark.django_db
def test_a_method_the_route_does_not_take_is_a_json_405(api):
    reply = api.delete("/api/patients")
    detail = _json_error(reply, 405)
    assert "DELETE" in detail and "GET" in reply["Allow"]


@pytest.mark.django_db
def test_a_csrf_refusal_is_json(clinician):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(clinician)
    reply = browser.post("/api/patients", {"label": "x"}, content_type="application/json")
    assert "CSRF" in _json_error(reply, 403)


@pytest.mark.django_db
def test_an_unauthenticated_call_is_json(outsider):
    assert "Bearer" in _json_error(outsider.get("/api/patients"), 401)
    assert "Bearer" in _json_error(Client(headers={"Authorization": "Bearer nope"}).get("/api/patients"), 401)


@pytest.mark.django_db
def test_an_unhandled_error_is_a_json_500(clinician, monkeypatch):
    def broken(q: str):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr("patients.selectors.patient_search", broken)
    _, token = ApiToken.issue(user=clinician, name="t")
    client = Client(headers={"Authorization": f"Bearer {token}"}, raise_request_exception=False)
    detail = _json_error(client.get("/api/patients"), 500)
    assert "a bug of ours" not in detail


@pytest.mark.django_db
def test_pages_outside_the_api_keep_their_html_errors(clinician_client):
    reply = clinician_client.get("/patients/-1/")
    assert reply.status_code == 404
    assert reply["Content-Type"].startswith("text/html")
