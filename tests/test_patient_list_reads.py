"""The HTML patient list: a search reads its rows through the trigram index when it finds few (and shows
exactly the rows, in the order, that reading every patient shows), and the empty new-patient form is
rendered once, the same HTML as rendering it on every page."""

from __future__ import annotations

import random
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients import search_index
from patients import views as patient_views
from patients.models import Patient, fold
from tests.test_patient_search_index import WORDS, _patients, _queries

pytestmark = pytest.mark.django_db(transaction=True)


def _page(client, q: str) -> str:
    response = client.get("/", {"q": q})
    assert response.status_code == 200
    return re.sub(r'(csrfmiddlewaretoken" value="|"X-CSRFToken": ")[^"]+', r"\1-", response.content.decode())


def test_a_search_shows_exactly_the_rows_of_reading_every_patient(clinician, clinician_client, monkeypatch):
    rng = random.Random(21)
    _patients(rng, 400)
    # Out of this clinician's reach: never shown, whichever way the rows are read.
    clinician.assigned_patients.remove(*Patient.objects.order_by("?")[:120])
    monkeypatch.setattr(patient_views, "LIST_LIMIT", 25)  # "showing the first …" on a page of few rows too
    monkeypatch.setattr(patient_views, "LIST_NARROWED_MAX", 60)
    decided = []
    finds_at_most = search_index.finds_at_most

    def watched(q, folded, most):
        decided.append(found := finds_at_most(q, folded, most))
        return found

    for q in [*_queries(rng), "000", "0421", "café changed"]:
        monkeypatch.setattr(search_index, "finds_at_most", watched)
        shown = _page(clinician_client, q)
        monkeypatch.setattr(search_index, "finds_at_most", lambda *args: False)  # every patient read
        assert _page(clinician_client, q) == shown, q
        monkeypatch.setattr(search_index, "finds_at_most", lambda *args: True)  # through the index
        if search_index.candidates(q.strip(), fold(q.strip())) is not None:
            assert _page(clinician_client, q) == shown, q
    assert True in decided and False in decided  # both ways were taken by the searches themselves


def test_a_rare_search_does_not_read_every_patient(clinician_client):
    _patients(random.Random(3), 300)
    Patient.objects.create(label="P-04217", notes="rare")
    _page(clinician_client, "P-0421")
    with CaptureQueriesContext(connection) as captured:
        html = _page(clinician_client, "P-0421")
    assert re.findall(r'<td><a href="/patients/\d+/"><strong>([^<]*)</strong>', html) == ["P-04217"]
    assert len(captured) <= 5
    (rows,) = [q["sql"] for q in captured.captured_queries if "report_count" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + rows.replace("%", "%%"))
        plan = " / ".join(row[-1] for row in cursor.fetchall())
    assert search_index.TABLE in rows and "SCAN patients_patient " not in f"{plan} ", plan


def test_the_empty_new_patient_form_is_rendered_once_as_the_page_would(staff_client, monkeypatch):
    Patient.objects.create(label=f"{WORDS[0]} 1")
    patient_views._blank_patient_fields.cache_clear()
    rendered = []
    original = patient_views.render_to_string

    def counted(name, context=None, *args, **kwargs):
        rendered.append(name)
        return original(name, context, *args, **kwargs)

    monkeypatch.setattr(patient_views, "render_to_string", counted)
    first, second = _page(staff_client, ""), _page(staff_client, "")
    assert first == second and rendered.count("patients/_patient_fields.html") == 1
    assert 'name="label"' in first and "Create patient" in first
    # Rendered by the page's own include with an empty form: the same bytes.
    monkeypatch.setattr(patient_views, "_blank_patient_fields", lambda language: "")
    assert _page(staff_client, "") == first
    # A refused create shows what was typed and why, not the empty form.
    Patient.objects.create(label="Taken")
    refused = staff_client.post("/patients/new/", {"label": "taken", "notes": "typed notes"})
    assert refused.status_code == 422 and "typed notes" in refused.content.decode()
