"""Redoing stages never destroys the clinician's work: `runpipeline --from-stage N`, and every council change
that would redo the stage a draft came from (ask again, replace), are refused with a message that names the
edited and signed versions, before anything is made, asked or deleted. Stages that leave the draft alone are
still redone."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from jobs.models import Job
from runs import services
from runs.models import Artifact, CouncilChange, DraftVersion, Run
from tests.run_helpers import run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def complete_run(run, fake_upstream) -> Run:
    code, output = run_pipeline_here(run)
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    return run


def _edit_and_sign(api, run: Run, artifact: Artifact) -> None:
    """Select `artifact`, save two versions of it and sign the second, through the API as a clinician does."""
    answer = api.post(
        f"/api/runs/{run.pk}/select", {"artifact_id": artifact.pk}, content_type="application/json"
    )
    assert answer.status_code == 200, answer.content
    for text in ("# Edited once\n\nNo numbers here.\n", "# Edited twice\n\nNo numbers here.\n"):
        answer = api.post(f"/api/runs/{run.pk}/versions", {"text": text}, content_type="application/json")
        assert answer.status_code in (200, 201), answer.content
    answer = api.post(f"/api/runs/{run.pk}/versions/2/sign", {}, content_type="application/json")
    assert answer.status_code == 200, answer.content


def _state(run: Run) -> tuple:
    run.refresh_from_db()
    return (
        run.status,
        run.stages_done,
        run.selected_artifact_id,
        sorted(run.artifacts.values_list("pk", flat=True)),
        sorted(DraftVersion.objects.filter(run=run).values_list("pk", "signed_at")),
    )


def test_from_stage_refuses_to_discard_a_signed_write_up_and_names_its_versions(
    api, signer, complete_run, fake_upstream
):
    run = complete_run
    draft = run.artifacts.get(stage=6, model_id="gpt-5")
    _edit_and_sign(api, run, draft)
    before, calls, jobs = _state(run), len(fake_upstream.calls), Job.objects.count()
    files = [a.path for a in run.artifacts.filter(stage__gte=5)]

    with pytest.raises(CommandError) as refused:
        run_pipeline_here(run, "--from-stage", "5")
    message = str(refused.value)
    assert f"Run {run.pk} holds the clinician's work" in message
    assert "write-up versions 1, 2 (2 signed by Dr Ada Rivera, MD, clinical neurophysiology," in message
    assert "edited from the final draft by gpt-5 (Stage 6)" in message
    assert (
        "Redoing Stages 5 to 6 would throw that draft away, and a signed version is never discarded"
        in message
    )
    assert "Start a new run over the same reports instead." in message
    # Nothing was made, asked, deleted or reopened.
    assert _state(run) == before and len(fake_upstream.calls) == calls and Job.objects.count() == jobs
    assert all(path.is_file() for path in files)


def test_from_stage_names_an_edited_unsigned_write_up_and_its_patient_version(api, signer, complete_run):
    run = complete_run
    draft = run.artifacts.get(stage=6, model_id="claude-sonnet-4-5")
    _edit_and_sign(api, run, draft)
    signed = DraftVersion.objects.get(run=run, kind="clinician", number=2)
    from runs import versions

    versions.version_write(
        run=run, kind="patient", base=draft, source=signed, text="# For you\n", model_id="gpt-5"
    )
    api.post(f"/api/runs/{run.pk}/versions", {"text": "# Edited thrice\n"}, content_type="application/json")
    with pytest.raises(CommandError) as refused:
        run_pipeline_here(run, "--from-stage", "6")
    message = str(refused.value)
    assert "write-up versions 1, 2, 3 (2 signed by Dr Ada Rivera" in message
    assert "and patient version 1 (not signed), edited from the final draft by claude-sonnet-4-5" in message
    assert "Redoing Stage 6 would throw that draft away" in message


def test_from_stage_redoes_what_the_edited_draft_does_not_come_from(api, signer, complete_run, fake_upstream):
    """Versions of the consolidation (Stage 4) are kept by redoing Stages 5 and 6; the selection stays."""
    run = complete_run
    consolidation = run.artifacts.get(stage=4)
    _edit_and_sign(api, run, consolidation)
    calls = len(fake_upstream.calls)
    code, output = run_pipeline_here(run, "--from-stage", "5")
    run.refresh_from_db()
    assert code == 0 and run.status == Run.Status.COMPLETE, output
    assert len(fake_upstream.calls) == calls + 6 and "redoing from Stage 5" in output
    assert run.selected_artifact_id == consolidation.pk
    assert DraftVersion.objects.filter(run=run, base=consolidation, signed_at__isnull=False).count() == 1


def test_a_version_saved_after_the_check_still_stops_the_reset_and_the_run_is_left_as_it_was(
    api, signer, complete_run, monkeypatch, fake_upstream
):
    run = complete_run
    draft = run.artifacts.get(stage=6, model_id="gpt-5")
    _edit_and_sign(api, run, draft)
    before, calls = _state(run), len(fake_upstream.calls)
    # As if the version had been saved between the command's first look and its reset.
    monkeypatch.setattr(services, "run_reset_check", _checks_later(services.run_reset_check))
    with pytest.raises(CommandError, match="write-up versions 1, 2"):
        run_pipeline_here(run, "--from-stage", "5")
    assert _state(run) == before and len(fake_upstream.calls) == calls
    job = Job.objects.filter(kind="runpipeline", target=str(run.pk)).latest("pk")
    assert job.status == Job.Status.DONE and "write-up versions 1, 2" in job.error


def _checks_later(check):
    seen = []

    def first_call_passes(*, run, stage):
        if not seen:
            seen.append(stage)
            return []
        return check(run=run, stage=stage)

    return first_call_passes


def test_the_api_refuses_council_changes_that_would_discard_a_signed_draft_in_words(
    api, signer, complete_run, launched
):
    run = complete_run
    _edit_and_sign(api, run, run.artifacts.get(stage=6, model_id="gpt-5"))
    before = _state(run)

    def post(kind: str, **payload):
        return api.post(f"/api/runs/{run.pk}/{kind}", payload, content_type="application/json")

    for answer in (
        post("reask", model="gpt-5", stage=6, reason="again"),
        post("reask", model="claude-sonnet-4-5", stage=5, dry_run=True),  # Stage 6 reads Stage 5
        post("replace", model=run.consolidator, stage=4, replacement="gpt-5"),
    ):
        assert answer.status_code == 409, answer.content
        assert answer["Content-Type"].startswith("application/json")
        detail = answer.json()["detail"]
        assert "write-up versions 1, 2 (2 signed by Dr Ada Rivera" in detail, detail
        assert "a signed version is never discarded" in detail and "Start a new run" in detail
    assert (
        "Asking claude-sonnet-4-5 again in Stage 5 would throw that draft away"
        in post("reask", model="claude-sonnet-4-5", stage=5).json()["detail"]
    )
    # A change that leaves the draft alone is still possible: nothing later reads Stage 6's other draft.
    answer = post("reask", model="claude-sonnet-4-5", stage=6, dry_run=True)
    assert answer.status_code == 200, answer.content
    assert _state(run) == before and not CouncilChange.objects.exists() and not launched


def test_the_run_page_says_why_and_changes_nothing(clinician_client, api, signer, complete_run, launched):
    run = complete_run
    _edit_and_sign(api, run, run.artifacts.get(stage=6, model_id="gpt-5"))
    before = _state(run)
    response = clinician_client.post(
        f"/runs/{run.pk}/reask/", {"model": "gpt-5", "stage": "3", "reason": "again"}, follow=True
    )
    page = response.content.decode()
    assert "write-up versions 1, 2 (2 signed by Dr Ada Rivera" in page
    assert "Asking gpt-5 again in Stage 3 would throw that draft away" in page
    assert _state(run) == before and not launched
