"""Edit, then sign: the selected draft opens in an editor with a server-rendered preview; every save is a
version on disk with its sha256; the clinician signs the latest version with the name and credentials of their
profile; a signed version never changes, a later edit is a new version; exports say "Draft — not signed" until
the version they print is signed, then print the signer and the hash."""

from __future__ import annotations

# ruff: noqa: RUF001  (the diff marks removed lines with a minus sign)
import hashlib
import html

import pytest

from accounts.models import profile_of
from runs.models import DraftVersion, Run
from tests.export_samples import pdf_pages_text
from tests.run_helpers import CONSOLIDATOR, COUNCIL, add_artifact, make_patient

pytestmark = pytest.mark.django_db

MODEL_DRAFT = "# Final draft\n\nTheta excess at Fz, Z = +2.6.\n\n## Next steps\n\nReview in 3 months.\n"


@pytest.fixture
def run(data_dir) -> Run:
    from patients.models import Report

    patient = make_patient("W-001")
    report = Report.objects.create(
        patient=patient, original_name="r.pdf", sha256="1" * 64, page_count=3, status=Report.Status.READY
    )
    run = Run.objects.create(
        patient=patient,
        report=report,
        council_models=COUNCIL,
        consolidator=CONSOLIDATOR,
        status=Run.Status.COMPLETE,
    )
    draft = add_artifact(run, stage=6, model_id="gpt-5", text=MODEL_DRAFT)
    add_artifact(run, stage=6, model_id="claude-sonnet-4-5", text="# Another draft\n")
    Run.objects.filter(pk=run.pk).update(selected_artifact=draft)
    run.refresh_from_db()
    return run


def _save(client, run, text):
    return client.post(f"/runs/{run.pk}/write-up/save/", {"text": text})


def test_the_editor_opens_the_selected_draft_with_its_preview(clinician_client, run):
    page = clinician_client.get(f"/runs/{run.pk}/write-up/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "Theta excess at Fz, Z = +2.6." in body  # in the textarea
    assert "<h2>Next steps</h2>" in body  # rendered in the preview
    assert f'hx-post="/runs/{run.pk}/write-up/preview/"' in body
    assert "keyup changed delay:500ms" in body
    assert "<script" not in body.split("</head>", 1)[1]  # CSP: no inline script in the page


def test_without_a_selection_the_editor_sends_you_to_choose(clinician_client, run):
    Run.objects.filter(pk=run.pk).update(selected_artifact=None)
    response = clinician_client.get(f"/runs/{run.pk}/write-up/", follow=True)
    assert response.redirect_chain[-1][0].endswith(f"/runs/{run.pk}/stages/6/#selection")
    assert "Select a final draft" in response.content.decode()


def test_the_preview_goes_through_the_one_cleaner(clinician_client, run):
    text = "## Heading\n\n<script>alert(1)</script>\n\n![x](http://evil.example/p.png) **bold**"
    response = clinician_client.post(f"/runs/{run.pk}/write-up/preview/", {"text": text})
    assert response.status_code == 200
    preview = response.content.decode()
    assert "<h2>Heading</h2>" in preview and "<strong>bold</strong>" in preview
    assert "<script" not in preview and "<img" not in preview and "evil.example" not in preview


def test_each_save_is_a_version_on_disk_with_its_hash_and_a_diff(clinician_client, clinician, run, data_dir):
    edited = MODEL_DRAFT.replace("Review in 3 months.", "Review in 6 weeks, with a repeat recording.")
    response = _save(clinician_client, run, edited.replace("\n", "\r\n"))
    assert response.status_code == 302
    version = DraftVersion.objects.get(run=run)
    assert version.number == 1 and version.author == clinician and version.base == run.selected_artifact
    assert version.path.is_relative_to(data_dir / "versions" / str(run.pk))
    assert version.path.read_text() == edited  # CRLF from the textarea stored as LF
    assert version.sha256 == hashlib.sha256(edited.encode()).hexdigest()
    page = clinician_client.get(f"/runs/{run.pk}/write-up/").content.decode()
    assert '<span class="d-del">− Review in 3 months.</span>' in page
    assert '<span class="d-add">+ Review in 6 weeks, with a repeat recording.</span>' in page
    _save(clinician_client, run, edited + "\nAddendum.\n")
    assert list(run.versions.values_list("number", flat=True)) == [1, 2]
    assert version.path.read_text() == edited  # version 1 untouched


@pytest.mark.parametrize(
    ("text", "status", "says"),
    [
        (MODEL_DRAFT, 409, "Nothing changed since the model's draft"),
        ("  \n ", 422, "empty"),
        ("x" * 200_001, 413, "at most 200,000"),
    ],
)
def test_a_save_that_adds_nothing_is_refused_and_keeps_the_text(clinician_client, run, text, status, says):
    response = _save(clinician_client, run, text)
    assert response.status_code == 422  # the page, re-shown with the posted text and the reason
    assert says in html.unescape(response.content.decode())
    assert not DraftVersion.objects.exists()
    api = clinician_client.post(
        f"/api/runs/{run.pk}/versions", {"text": text}, content_type="application/json"
    )
    assert api.status_code == status and says in api.json()["detail"]


def test_an_over_long_save_is_refused_by_its_length_before_it_is_cleaned(clinician_client, run, monkeypatch):
    """A 4 MB post of link openers is refused as it came, not cleaned first (the cleaning took 4 s per
    200,000 such characters, and a request body may be 100 MB)."""
    from runs import versions

    cleaned: list[int] = []
    clean = versions.clean_markdown
    monkeypatch.setattr(versions, "clean_markdown", lambda text: cleaned.append(len(text)) or clean(text))
    text = "[x](" * 1_000_000
    api = clinician_client.post(
        f"/api/runs/{run.pk}/versions", {"text": text}, content_type="application/json"
    )
    assert api.status_code == 413 and "4,000,000 characters" in api.json()["detail"]
    page = _save(clinician_client, run, text)
    assert page.status_code == 422 and "at most 200,000" in html.unescape(page.content.decode())
    assert max(cleaned, default=0) <= versions.MAX_VERSION_CHARS
    assert not DraftVersion.objects.exists()


def test_signing_needs_a_name_on_the_profile(clinician_client, run):
    _save(clinician_client, run, MODEL_DRAFT + "\nEdited.\n")
    page = clinician_client.get(f"/runs/{run.pk}/write-up/").content.decode()
    assert "add your name and credentials to your profile" in page and 'id="sign"' not in page
    response = clinician_client.post(f"/api/runs/{run.pk}/versions/1/sign")
    assert response.status_code == 422 and "profile" in response.json()["detail"]
    assert DraftVersion.objects.get().signed_at is None


def test_a_signed_version_is_immutable_and_a_change_is_a_new_version(clinician_client, signer, run):
    _save(clinician_client, run, MODEL_DRAFT + "\nEdited.\n")
    response = clinician_client.post(f"/runs/{run.pk}/write-up/1/sign/", follow=True)
    assert "Version 1 signed by Dr Ada Rivera, MD, clinical neurophysiology" in response.content.decode()
    first = DraftVersion.objects.get(number=1)
    assert first.signed_by == signer and first.signer_name == "Dr Ada Rivera" and first.signed_at
    again = clinician_client.post(f"/api/runs/{run.pk}/versions/1/sign")
    assert again.status_code == 409 and "already signed" in again.json()["detail"]
    # A later profile edit does not change what was signed.
    profile_of(signer).__class__.objects.filter(user=signer).update(display_name="Someone Else")
    first.refresh_from_db()
    assert first.signature_line().startswith("Dr Ada Rivera, MD")
    # The next change is version 2, unsigned; version 1 cannot be signed or changed any more.
    _save(clinician_client, run, MODEL_DRAFT + "\nEdited twice.\n")
    second = DraftVersion.objects.get(number=2)
    assert second.signed_at is None and first.path.read_text().endswith("Edited.\n")
    old = clinician_client.post(f"/api/runs/{run.pk}/versions/1/sign")
    assert old.status_code == 409


def test_a_version_changed_on_disk_cannot_be_signed(clinician_client, signer, run):
    _save(clinician_client, run, MODEL_DRAFT + "\nEdited.\n")
    version = DraftVersion.objects.get()
    version.path.write_text("something else\n")
    response = clinician_client.post(f"/api/runs/{run.pk}/versions/1/sign")
    assert response.status_code == 409 and "does not match its recorded hash" in response.json()["detail"]
    assert clinician_client.get(f"/api/runs/{run.pk}/versions/1").status_code == 409


def test_versions_api(api, clinician, run):
    created = api.post(
        f"/api/runs/{run.pk}/versions", {"text": "# Mine\n\nShort.\n"}, content_type="application/json"
    )
    assert created.status_code == 201
    body = created.json()
    assert body["number"] == 1 and body["artifact_id"] == run.selected_artifact_id and not body["signed"]
    assert body["sha256"] == hashlib.sha256(b"# Mine\n\nShort.\n").hexdigest()
    assert api.get(f"/api/runs/{run.pk}/versions/1").json()["text"] == "# Mine\n\nShort.\n"
    assert [v["number"] for v in api.get(f"/api/runs/{run.pk}/versions").json()] == [1]
    assert api.get(f"/api/runs/{run.pk}/versions/7").status_code == 404
    profile = profile_of(clinician)
    profile.display_name = "Dr B. Okafor"
    profile.save()
    signed = api.post(f"/api/runs/{run.pk}/versions/1/sign").json()
    assert signed["signed"] and signed["signer_name"] == "Dr B. Okafor" and signed["signer_credentials"] == ""


def test_selecting_another_draft_starts_its_own_history(clinician_client, run):
    _save(clinician_client, run, MODEL_DRAFT + "\nEdited.\n")
    other = run.artifacts.get(model_id="claude-sonnet-4-5")
    Run.objects.filter(pk=run.pk).update(selected_artifact=other)
    page = clinician_client.get(f"/runs/{run.pk}/write-up/").content.decode()
    assert "# Another draft" in page and "No versions saved yet." in page


def _export(client, run) -> tuple[str, str]:
    assert client.post(f"/api/runs/{run.pk}/export").status_code == 200
    md = run.export_path(Run.EXPORT_MARKDOWN).read_text()
    pdf = "\n".join(pdf_pages_text(run.export_path(Run.EXPORT_PDF).read_bytes()))
    return md, pdf


def test_exports_are_marked_draft_until_signed_then_print_signer_and_hash(clinician_client, signer, run):
    md, pdf = _export(clinician_client, run)
    assert md.startswith("> **Draft — not signed.** The model's draft as written")
    assert "Draft — not signed" in pdf and "qEEG Council report — W-001 — Draft — not signed" in pdf
    edited = MODEL_DRAFT + "\nClinician's note: correlate with sleep diary.\n"
    _save(clinician_client, run, edited)
    md, pdf = _export(clinician_client, run)
    assert "Clinician's note: correlate with sleep diary." in md and "Draft — not signed" in md
    assert "Version 1, edited by Dr Ada Rivera" in md
    assert "Clinician's note" in pdf and "Draft — not signed" in pdf
    clinician_client.post(f"/runs/{run.pk}/write-up/1/sign/")
    version = DraftVersion.objects.get()
    md, pdf = _export(clinician_client, run)
    assert "Draft — not signed" not in md and "Draft — not signed" not in pdf
    assert "**Signed** by Dr Ada Rivera, MD, clinical neurophysiology" in md
    assert version.sha256 in md and f"| Text sha256 | {version.sha256} |" in md
    flat = pdf.replace("\n", "")
    assert "Signed by Dr Ada Rivera" in pdf and version.sha256 in flat
    # A later edit is a new, unsigned version: the export is a draft again.
    _save(clinician_client, run, edited + "\nOne more line.\n")
    md, pdf = _export(clinician_client, run)
    assert md.startswith("> **Draft — not signed.** Version 2") and "One more line." in md


def test_the_profile_page_sets_the_signature(clinician_client, clinician):
    page = clinician_client.get("/account/profile/")
    assert page.status_code == 200 and "Your profile" in page.content.decode()
    refused = clinician_client.post("/account/profile/", {"display_name": " ", "credentials": "MD"})
    assert refused.status_code == 422 and "under a signature" in refused.content.decode()
    saved = clinician_client.post(
        "/account/profile/", {"display_name": "Dr Zoë Ødegård", "credentials": "MD", "next": "/runs/"}
    )
    assert saved.status_code == 302 and saved["Location"] == "/runs/"
    assert profile_of(clinician).signature_line() == "Dr Zoë Ødegård, MD"
    offsite = clinician_client.post(
        "/account/profile/", {"display_name": "Dr Z", "credentials": "", "next": "https://evil.example/"}
    )
    assert offsite["Location"] == "/account/profile/"
