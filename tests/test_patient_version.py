"""The patient version: from the signed write-up, one model the clinician chooses writes a plain-language
summary for the patient (a job, never in the web request), through the council client after the text is
de-identified (runs.sources) — a planted identifier never reaches the upstream, and the guard refuses one
that slips through. It is a DraftVersion of kind "patient": number-checked, edited, signed and exported like
the write-up, with its own PDF marked "Draft — not signed" until signed."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from council.deid import fold
from jobs.models import Job
from patients.models import PatientIdentifier
from runs import patient_version, sources, versions
from runs.models import DraftVersion, NumberAcknowledgement, PatientVersionRequest, Run
from tests.checked_runs import make_checked_run
from tests.deid_samples import PLANTED
from tests.export_samples import pdf_pages_text
from tests.fake_upstream.replies import FAKE_MARK

LABEL = "Zoë Müller-Ødegård Σοφία Дмитрий 患者 #017"


def _sign_write_up(run: Run, user, text: str) -> DraftVersion:
    version = versions.version_save(run=run, text=text, user=user)
    keys = [
        c.key
        for c in versions.selectors.unresolved_numbers(
            run.selected_artifact, versions.selectors.fact_table(run), text
        )
    ]
    return versions.version_sign(run=run, number=version.number, user=user, acknowledge=keys)


@pytest.fixture
def signed_run(db, data_dir: Path, tmp_path: Path, signer):
    return signed_run_with_identifiers(tmp_path, signer)


def signed_run_with_identifiers(tmp_path: Path, signer):
    """A run whose write-up the clinician signed: it names the patient (a planted name and MRN, recorded as
    identifiers, and the label in four scripts) and cites two reaction times, one of them another session's."""
    run, artifact, rt, wrong = make_checked_run(tmp_path, label=LABEL)
    for kind, value in [
        (PatientIdentifier.Kind.NAME, PLANTED["name"]),
        (PatientIdentifier.Kind.RECORD_NUMBER, PLANTED["mrn"]),
    ]:
        PatientIdentifier.objects.create(patient=run.patient, kind=kind, value=value)
    text = (
        f"# Write-up for {PLANTED['name']} (MRN {PLANTED['mrn']}, {LABEL})\n\n"
        + artifact.path.read_text().split("\n", 1)[1]
        + "\n## Next steps\n\nRepeat the recording in 3 months.\n"
    )
    _sign_write_up(run, signer, text)
    return run, artifact, rt, wrong


def _write_here(request_id: int) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("patientversion", str(request_id), stdout=out, stderr=out)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


def _leaks(text: str) -> list[str]:
    folded = fold(text)
    spellings = [*PLANTED["spellings"][:6], PLANTED["mrn"], "Ødegård", "Müller-Ødegård", "患者 #017"]
    return [s for s in spellings if fold(s) in folded]


# -- asking ------------------------------------------------------------------------------------------------


def test_asking_needs_a_signed_write_up(db, tmp_path, api, clinician_client, launched, fake_upstream):
    run, _artifact, _rt, _wrong = make_checked_run(tmp_path)
    refused = api.post(f"/api/runs/{run.pk}/patient-version/requests", {}, content_type="application/json")
    assert refused.status_code == 409 and "Sign the write-up first" in refused.json()["detail"]
    page = clinician_client.get(reverse("runs:patient_version", args=[run.pk])).content.decode()
    assert 'id="sign-first"' in page and 'id="ask-form"' not in page
    assert not PatientVersionRequest.objects.exists() and not launched


def test_asking_queues_one_job_for_the_chosen_model(
    signed_run, api, launched, fake_upstream, settings, django_capture_on_commit_callbacks
):
    run, *_ = signed_run
    url = f"/api/runs/{run.pk}/patient-version/requests"
    unknown = api.post(url, {"model_id": "no-such-model"}, content_type="application/json")
    assert unknown.status_code == 422 and "Not offered by CLIProxyAPI" in unknown.json()["detail"]
    with django_capture_on_commit_callbacks(execute=True):
        asked = api.post(url, {}, content_type="application/json")
    assert asked.status_code == 202, asked.content
    body = asked.json()
    # No model named: the run's consolidator writes it.
    assert body["model_id"] == run.consolidator and body["status"] == "queued" and body["source_version"] == 1
    request = PatientVersionRequest.objects.get()
    assert request.job.kind == "patientversion" and request.job.args == [str(request.pk)]
    assert launched and launched[-1][0] == "patientversion"  # a child process, never this request
    again = api.post(url, {"model_id": "gpt-5"}, content_type="application/json")
    assert again.status_code == 409 and "already being written" in again.json()["detail"]
    assert AuditEvent.objects.filter(action="patient_version.requested").count() == 1
    # A writer that never starts is settled (failed, "ask again"), then another model may be asked.
    Job.objects.filter(pk=request.job_id).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    listed = api.get(url).json()
    assert listed[0]["status"] == "failed" and "ask again" in listed[0]["error"]
    settings.PATIENT_VERSION_MODEL = "gemini-2.5-pro"
    assert api.post(url, {}, content_type="application/json").json()["model_id"] == "gemini-2.5-pro"


def test_the_page_offers_the_runs_models_first_and_polls_while_writing(
    signed_run, clinician_client, launched, fake_upstream
):
    run, *_ = signed_run
    page = clinician_client.get(reverse("runs:patient_version", args=[run.pk])).content.decode()
    options = page.split('id="patient-model"')[1].split("</select>")[0]
    assert options.index(f'value="{run.consolidator}" selected') < options.index("value=") + 200
    clinician_client.post(reverse("runs:patient_version_ask", args=[run.pk]), {"model": "gpt-5"})
    request = PatientVersionRequest.objects.get()
    assert request.model_id == "gpt-5"
    writing = clinician_client.get(reverse("runs:patient_version", args=[run.pk])).content.decode()
    assert f'hx-get="/runs/{run.pk}/patient-version/?waiting={request.pk}"' in writing
    assert 'hx-trigger="every 2s"' in writing and 'id="ask-form"' not in writing
    poll = {"HTTP_HX_REQUEST": "true"}
    url = reverse("runs:patient_version", args=[run.pk]) + f"?waiting={request.pk}"
    assert "HX-Refresh" not in clinician_client.get(url, **poll).headers
    PatientVersionRequest.objects.filter(pk=request.pk).update(status="failed", error="gpt-5: it broke")
    done = clinician_client.get(url, **poll)
    assert done.headers["HX-Refresh"] == "true"
    assert (
        "gpt-5: it broke"
        in clinician_client.get(reverse("runs:patient_version", args=[run.pk])).content.decode()
    )


# -- writing (the runner) ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_runner_writes_version_1_from_the_de_identified_signed_text(
    data_dir, tmp_path, signer, fake_upstream, launched
):
    run, _artifact, _rt, _wrong = signed_run_with_identifiers(tmp_path, signer)
    request = patient_version.request_create(run=run, model_id="gpt-5", user=signer)
    fake_upstream.reset_calls()
    code, out = _write_here(request.pk)
    assert code == 0, out
    [call] = [c for c in fake_upstream.calls if c.endpoint != "models"]
    sent = json.dumps(call.body, ensure_ascii=False)
    assert "qEEG Council — Patient version" in sent and "[NAME]" in sent
    assert not _leaks(sent), _leaks(sent)
    request.refresh_from_db()
    assert request.status == "done" and request.job.status == "done"
    version = request.version
    assert (version.kind, version.number, version.model_id) == ("patient", 1, "gpt-5")
    assert version.author is None and version.source == versions.signed_write_up(run)
    text = versions.version_text(version)
    assert text.startswith(FAKE_MARK) and "# Your qEEG results: a summary for you" in text
    assert "## Technical appendix" in text and "<!-- END OF REPORT -->" not in text
    # Its numbers were checked as it was saved: the appendix copied the write-up's two reaction times.
    assert version.numbers["numbers"] == 2 and version.numbers["wrong_session"] == 1
    assert request.prompt_tokens and request.completion_tokens
    assert AuditEvent.objects.filter(action="patient_version.written", user=signer).exists()
    assert "patient version 1 written by gpt-5" in out and LABEL not in out


@pytest.mark.django_db(transaction=True)
def test_an_identifier_that_slips_past_de_identification_is_refused_by_the_guard(
    data_dir, tmp_path, signer, fake_upstream, launched, monkeypatch
):
    run, *_ = signed_run_with_identifiers(tmp_path, signer)
    request = patient_version.request_create(run=run, model_id="gpt-5", user=signer)
    # As if the text skipped runs.sources: the client's guard is the last look before anything leaves.
    monkeypatch.setattr(
        sources, "write_up_source", lambda *, patient, reports, text: (text, patient.clinical_context())
    )
    fake_upstream.reset_calls()
    code, out = _write_here(request.pk)
    assert code == 1
    assert not [c for c in fake_upstream.calls if c.endpoint != "models"]  # nothing was sent
    request.refresh_from_db()
    assert request.status == "failed" and "identif" in request.error.lower()
    assert not _leaks(request.error) and not _leaks(out)
    assert not DraftVersion.objects.filter(kind="patient").exists()


# -- review, edit, sign, export ----------------------------------------------------------------------------


def _model_wrote(run: Run, text: str) -> DraftVersion:
    source = versions.signed_write_up(run)
    return versions.version_write(
        run=run, kind="patient", base=source.base, source=source, text=text, model_id="gpt-5"
    )


def _patient_text(rt, wrong) -> str:
    return (
        "# Your qEEG results: a summary for you\n\n"
        "You had a recording of your brain's electrical activity.\n\n"
        "## Technical appendix\n\n"
        f"- Reaction time in session 1 was {rt[1]['value']} ms [p1].\n"
        f"- Reaction time in session 2 was {wrong} ms (p. 1).\n"
    )


def test_the_patient_version_is_edited_signed_and_exported_like_the_write_up(
    signed_run, api, clinician_client
):
    run, _artifact, rt, wrong = signed_run
    _model_wrote(run, _patient_text(rt, wrong))
    page = clinician_client.get(reverse("runs:patient_version", args=[run.pk])).content.decode()
    assert "Patient version: a plain-language summary" in page and "written by gpt-5" in page
    assert '<mark class="number-flag wrong_session"' in page  # the preview marks it
    # Edit: version 2, by the clinician, from the same signed write-up.
    edited = _patient_text(rt, wrong) + "\nAsk us anything at your next visit.\n"
    clinician_client.post(reverse("runs:patient_version_save", args=[run.pk]), {"text": edited})
    v2 = DraftVersion.objects.get(kind="patient", number=2)
    assert v2.author is not None and not v2.model_id and v2.source == versions.signed_write_up(run)
    assert DraftVersion.objects.filter(kind="clinician").count() == 1  # the write-up is untouched
    # Exported unsigned: its own files, titled as the patient version and marked a draft on every page.
    refused = api.post(f"/api/runs/{run.pk}/patient-version/export")
    assert refused.status_code == 409 and refused.json()["unresolved"][0]["status"] == "wrong_session"
    key = refused.json()["unresolved"][0]["key"]
    ok = api.post(
        f"/api/runs/{run.pk}/patient-version/export", {"acknowledge": [key]}, content_type="application/json"
    )
    assert ok.status_code == 200, ok.content
    assert ok.json()["pdf_url"] == f"/api/runs/{run.pk}/export/patient.pdf"
    assert not run.export_path(Run.EXPORT_MARKDOWN).exists()  # the write-up's export is its own
    stage = clinician_client.get(reverse("runs:stage", args=[run.pk, 6])).content.decode()
    assert "Export Markdown and PDF" in stage and "Export again" not in stage  # the write-up's is not done
    md = run.export_path(Run.EXPORT_PATIENT_MARKDOWN).read_text()
    assert md.startswith("> **Patient version**") and "**Draft — not signed.**" in md
    assert "| Written by | gpt-5, from the signed write-up |" in md and "## How this summary was made" in md
    assert "version 2, saved by Dr Ada Rivera, MD" in md and "acknowledged by clinician" in md
    pages = pdf_pages_text(b"".join(api.get(ok.json()["pdf_url"]).streaming_content))
    assert all("Patient version" in p and "Draft — not signed" in p for p in pages)
    assert LABEL in pages[0] and "Ask us anything" in "".join(pages)
    # Signing asks nothing more: the number was acknowledged for the patient version already.
    signed = api.post(f"/api/runs/{run.pk}/patient-versions/2/sign")
    assert signed.status_code == 200 and signed.json()["kind"] == "patient"
    api.post(f"/api/runs/{run.pk}/patient-version/export")
    md = run.export_path(Run.EXPORT_PATIENT_MARKDOWN).read_text()
    assert "Draft — not signed" not in md and "Reviewed and **signed** by Dr Ada Rivera, MD" in md
    pages = pdf_pages_text(run.export_path(Run.EXPORT_PATIENT_PDF).read_bytes())
    assert not any("Draft — not signed" in p for p in pages)
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"version.saved", "version.signed", "patient_version.exported"} <= actions
    assert AuditEvent.objects.filter(action="version.signed", detail__kind="patient").exists()


def test_acknowledgements_of_the_write_up_do_not_cover_the_patient_version(signed_run, api):
    run, _artifact, _rt, _wrong = signed_run
    # The write-up's flagged number was acknowledged when it was signed; the same text as a patient
    # version is a different text for a different reader, and asks again.
    write_up = versions.version_text(versions.signed_write_up(run))
    acknowledged = set(NumberAcknowledgement.objects.filter(kind="clinician").values_list("key", flat=True))
    assert acknowledged
    _model_wrote(run, write_up)
    refused = api.post(f"/api/runs/{run.pk}/patient-versions/1/sign")
    assert refused.status_code == 409
    assert {u["key"] for u in refused.json()["unresolved"]} == acknowledged


def test_the_patient_version_api(signed_run, api):
    run, _artifact, rt, wrong = signed_run
    assert api.get(f"/api/runs/{run.pk}/patient-versions").json() == []
    none = api.post(
        f"/api/runs/{run.pk}/patient-versions", {"text": "# Mine\n"}, content_type="application/json"
    )
    assert none.status_code == 409 and "no patient version yet" in none.json()["detail"]
    assert api.post(f"/api/runs/{run.pk}/patient-version/export").status_code == 409
    _model_wrote(run, _patient_text(rt, wrong))
    [listed] = api.get(f"/api/runs/{run.pk}/patient-versions").json()
    assert listed["model_id"] == "gpt-5" and listed["author"] == "" and listed["source_version"] == 1
    detail = api.get(f"/api/runs/{run.pk}/patient-versions/1").json()
    assert "Technical appendix" in detail["text"] and detail["unresolved"][0]["status"] == "wrong_session"
    assert api.get(f"/api/runs/{run.pk}/patient-versions/7").status_code == 404
    saved = api.post(
        f"/api/runs/{run.pk}/patient-versions",
        {"text": detail["text"] + "\nMore.\n"},
        content_type="application/json",
    )
    assert saved.status_code == 201 and saved.json()["number"] == 2 and saved.json()["kind"] == "patient"
    stale = api.post(f"/api/runs/{run.pk}/patient-versions/1/sign")
    assert stale.status_code == 409 and "not the current patient version" in stale.json()["detail"]
    # The write-up's own versions list is unchanged by any of it.
    assert [v["kind"] for v in api.get(f"/api/runs/{run.pk}/versions").json()] == ["clinician"]


def test_a_patient_version_written_before_the_write_up_was_signed_again_says_so(
    signed_run, clinician_client, signer
):
    run, _artifact, rt, wrong = signed_run
    _model_wrote(run, _patient_text(rt, wrong))
    write_up = versions.version_text(versions.signed_write_up(run))
    _sign_write_up(run, signer, write_up + "\nAddendum after review.\n")
    page = clinician_client.get(reverse("runs:patient_version", args=[run.pk])).content.decode()
    assert 'id="stale-source"' in page and "signed again (version 2)" in page


def test_a_run_with_a_patient_version_can_still_be_deleted(signed_run, fake_upstream, launched):
    run, _artifact, rt, wrong = signed_run
    _model_wrote(run, _patient_text(rt, wrong))
    patient_version.request_create(run=run, model_id="gpt-5", user=None)
    run.delete()  # a request's source and a version's source go with the run, not in its way
    assert not DraftVersion.objects.exists() and not PatientVersionRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_patient_version_is_one_call_shown_before_asking_counted_and_refused_over_quota(
    data_dir, tmp_path, signer, fake_upstream, launched, settings, clinician_client, api
):
    from runs import limits

    run, *_ = signed_run_with_identifiers(tmp_path, signer)
    settings.MODEL_CALLS_PER_USER_PER_DAY = 1
    page = reverse("runs:patient_version", args=[run.pk])
    estimate = clinician_client.get(page).content.decode().split('id="patient-estimate"')[1].split("</p>")[0]
    assert "1 model call" in estimate and "1 of today's 1 model calls left" in estimate
    request = patient_version.request_create(run=run, model_id="gpt-5", user=signer)
    assert limits.quota(signer).reserved == 1  # held while it is written
    assert _write_here(request.pk)[0] == 0
    assert limits.quota(signer).used_today == 1 and limits.quota(signer).reserved == 0
    # None left today: the page says so before asking, and asking is refused with nothing queued.
    assert "0 of today's 1 model calls left" in clinician_client.get(page).content.decode()
    refused = clinician_client.post(
        reverse("runs:patient_version_ask", args=[run.pk]), {"model": "gpt-5"}, follow=True
    )
    assert (
        "Writing the patient version makes about 1 model call, and you have 0 of today"
        in refused.content.decode()
    )
    answer = api.post(f"/api/runs/{run.pk}/patient-version/requests", {}, content_type="application/json")
    assert answer.status_code == 429 and "MODEL_CALLS_PER_USER_PER_DAY" in answer.json()["detail"]
    assert PatientVersionRequest.objects.count() == 1
    settings.MODEL_CALLS_PER_USER_PER_DAY = 2
    assert (
        api.post(
            f"/api/runs/{run.pk}/patient-version/requests", {}, content_type="application/json"
        ).status_code
        == 202
    )
