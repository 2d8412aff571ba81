"""The number check on the clinician's own text: every saved version is checked against the fact table as
it is saved (the summary kept on the version), the editor's live preview and each version's page mark the
flagged numbers, and signing a version with flagged numbers asks for the same acknowledgement as exporting
it (one path: an acknowledgement given at signing is not asked again at export)."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from runs.models import DraftVersion, NumberAcknowledgement, Run
from tests.checked_runs import make_checked_run


@pytest.fixture
def checked_run(db, data_dir: Path, tmp_path: Path):
    return make_checked_run(tmp_path)


def _draft(artifact) -> str:
    return artifact.path.read_text()


def _fixed(artifact, rt, wrong) -> str:
    """The draft with session 2's value corrected: nothing left to flag."""
    return _draft(artifact).replace(f"was {wrong} ms (p. 1)", f"was {rt[2]['value']} ms (p. 1)")


def test_each_saved_version_keeps_what_the_check_said(checked_run, api):
    run, artifact, rt, wrong = checked_run
    planted = _draft(artifact) + "\nReaction time in session 1 was also 999.9 ms [p1].\n"
    saved = api.post(f"/api/runs/{run.pk}/versions", {"text": planted}, content_type="application/json")
    assert saved.status_code == 201, saved.content
    assert saved.json()["numbers"] == {
        "numbers": 3, "flagged": 2, "match": 1, "wrong_page": 0, "wrong_session": 1, "wrong_site": 0,
        "no_match": 1,
    }  # fmt: skip
    fixed = api.post(
        f"/api/runs/{run.pk}/versions", {"text": _fixed(artifact, rt, wrong)}, content_type="application/json"
    )
    assert fixed.json()["numbers"]["flagged"] == 0 and fixed.json()["numbers"]["match"] == 2
    assert list(DraftVersion.objects.values_list("numbers__flagged", flat=True)) == [2, 0]
    detail = api.get(f"/api/runs/{run.pk}/versions/1").json()
    assert "2 flagged (1 wrong session, 1 match nothing)" in detail["numbers_now"]
    assert sorted(u["status"] for u in detail["unresolved"]) == ["no_match", "wrong_session"]
    assert AuditEvent.objects.filter(action="version.saved").count() == 2


def test_the_live_preview_marks_flagged_numbers_as_typed(checked_run, clinician_client):
    run, artifact, rt, wrong = checked_run
    url = reverse("runs:write_up_preview", args=[run.pk])
    flagged = clinician_client.post(url, {"text": _draft(artifact)}).content.decode()
    assert "2 numbers checked against the fact table: 1 match, 1 flagged (1 wrong session)" in flagged
    marked = flagged.split('<mark class="number-flag wrong_session" title=')[1].split("</mark>")[0]
    assert f">{wrong} ms" in marked and "Wrong session; this value is Reaction Time" in html.unescape(marked)
    clean = clinician_client.post(url, {"text": _fixed(artifact, rt, wrong)}).content.decode()
    assert "2 match" in clean and "number-flag" not in clean
    # The editor page's first preview is the same fragment.
    page = clinician_client.get(reverse("runs:write_up", args=[run.pk])).content.decode()
    assert 'id="preview-numbers"' in page and '<mark class="number-flag wrong_session"' in page


def test_a_version_page_shows_its_text_with_flags_and_what_the_check_said(checked_run, clinician_client):
    run, artifact, _rt, wrong = checked_run
    edited = _draft(artifact) + "\nReviewed.\n"
    clinician_client.post(reverse("runs:write_up_save", args=[run.pk]), {"text": edited})
    editor = clinician_client.get(reverse("runs:write_up", args=[run.pk])).content.decode()
    version_url = reverse("runs:write_up_version", args=[run.pk, 1])
    assert f'href="{version_url}"' in editor and "1 flagged</span> of 2" in editor
    page = clinician_client.get(version_url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "Write-up, version 1" in body and "draft — not signed" in body
    assert '<mark class="number-flag wrong_session"' in body and f">{wrong} ms" in body
    assert "Now: 2 numbers checked" in body and "1 not acknowledged" in body
    assert clinician_client.get(reverse("runs:write_up_version", args=[run.pk, 9])).status_code == 404


def test_signing_asks_for_each_flagged_number_as_the_export_does(checked_run, api, signer):
    run, artifact, _rt, wrong = checked_run
    api.post(
        f"/api/runs/{run.pk}/versions", {"text": _draft(artifact) + "\nSigned off.\n"},
        content_type="application/json",
    )  # fmt: skip
    refused = api.post(f"/api/runs/{run.pk}/versions/1/sign")
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert "before signing" in body["detail"]
    [flagged] = body["unresolved"]
    assert flagged["status"] == "wrong_session" and flagged["text"] == f"{wrong} ms"
    assert not DraftVersion.objects.get(number=1).signed
    signed = api.post(
        f"/api/runs/{run.pk}/versions/1/sign",
        {"acknowledge": [flagged["key"]]},
        content_type="application/json",
    )
    assert signed.status_code == 200, signed.content
    assert signed.json()["signer_name"] == "Dr Ada Rivera"
    ack = NumberAcknowledgement.objects.get(artifact=artifact)
    assert ack.by == signer and ack.key == flagged["key"]
    assert AuditEvent.objects.filter(action="version.signed", object_id=str(DraftVersion.objects.get().pk))
    # One path: what was acknowledged to sign is not asked again to export.
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
    assert "acknowledged by clinician" in run.export_path(Run.EXPORT_MARKDOWN).read_text()


def test_a_version_whose_numbers_all_match_signs_at_once(checked_run, api, signer):
    run, artifact, rt, wrong = checked_run
    api.post(
        f"/api/runs/{run.pk}/versions", {"text": _fixed(artifact, rt, wrong)}, content_type="application/json"
    )
    assert api.post(f"/api/runs/{run.pk}/versions/1/sign").status_code == 200
    assert not NumberAcknowledgement.objects.exists()


def test_the_sign_form_lists_the_flagged_numbers_and_signs_once_each_is_ticked(
    checked_run, clinician_client, signer
):
    run, artifact, _rt, _wrong = checked_run
    clinician_client.post(
        reverse("runs:write_up_save", args=[run.pk]), {"text": _draft(artifact) + "\nOK.\n"}
    )
    page = clinician_client.get(reverse("runs:write_up", args=[run.pk])).content.decode()
    form = page.split('id="sign-form"')[1].split("</form>")[0]
    assert 'name="acknowledge"' in form and "Acknowledge and sign version 1" in form
    key = html.unescape(form.split('name="acknowledge" value="')[1].split('"')[0])
    sign = reverse("runs:write_up_sign", args=[run.pk, 1])
    refused = clinician_client.post(sign, follow=True).content.decode()
    assert "acknowledge each one (or correct the text) before signing" in html.unescape(refused)
    assert not DraftVersion.objects.get().signed
    clinician_client.post(sign, {"acknowledge": [key]})
    assert DraftVersion.objects.get().signed
