"""The patient list keeps each row's HTML keyed by what the row shows (patients.views._patient_row_html). A
reason for referral is any length and the row shows its first 60 characters: the key holds those, never the
whole text (4,096 kept rows of a 10 MB reason each, what a form post may carry, were 40 GB of keys)."""

from __future__ import annotations

from django.template.loader import render_to_string
from django.utils.text import Truncator

from patients import views
from patients.models import Patient
from tests.conftest import signed_in


def test_a_kept_row_holds_what_it_shows_of_a_long_reason_and_shows_the_same(staff, db, monkeypatch):
    reason = "Referred for attention problems at school & at home. " * 20_000  # ~1 MB
    Patient.objects.create(label="SYNTH-ROW-1", referral_reason=reason)
    Patient.objects.create(label="SYNTH-ROW-2", referral_reason="Short reason <b>")
    kept, real = [], views._patient_row_html
    monkeypatch.setattr(views, "_patient_row_html", lambda row: kept.append(row) or real(row))

    html = signed_in(staff).get("/").content.decode()

    rows = {row.label: row for row in kept}
    assert rows["SYNTH-ROW-1"].referral_reason == Truncator(reason).chars(60)
    assert len(rows["SYNTH-ROW-1"].referral_reason) == 60  # the template shows 60 (truncatechars)
    assert rows["SYNTH-ROW-2"].referral_reason == "Short reason <b>"
    # The row is what the template made of the whole reason, byte for byte.
    for label, whole in (("SYNTH-ROW-1", reason), ("SYNTH-ROW-2", "Short reason <b>")):
        row = rows[label]
        made = render_to_string(
            "patients/_patient_row.html", {"patient": row._replace(referral_reason=whole)}
        )
        assert real(row) == made
        assert made.strip() in html
