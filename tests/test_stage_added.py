"""Adding a step is adding its module, its prompt file and one registration: with a test-only Stage 7
registered (tests/stage_plain_summary.py), the pipeline runs it, `runpipeline` redoes it, the pages, the
API and the export show it — and no other file was edited for it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from council import prompts
from council.anonymize import redactor
from council.stages import STEPS
from council.stages.registry import Step, Takers, Who
from runs.models import Artifact, Run
from tests import stage_plain_summary
from tests.run_helpers import CONSOLIDATOR, COUNCIL, run_pipeline_here

pytestmark = pytest.mark.django_db(transaction=True)


def _register(step: Step, monkeypatch, tmp_path: Path) -> Iterator[Step]:
    # A real step's prompt file sits beside the others in council/prompts/; here a copy of that folder gets
    # the test step's file, so the real folder is never written to.
    folder = tmp_path / "prompts"
    shutil.copytree(prompts.PROMPT_DIR, folder)
    shutil.copy(stage_plain_summary.PROMPT_FILE, folder / f"{step.prompt}.md")
    monkeypatch.setattr(prompts, "PROMPT_DIR", folder)
    prompts.load.cache_clear()
    STEPS.register(step)
    try:
        yield step
    finally:
        STEPS.unregister(step.key)
        prompts.load.cache_clear()


@pytest.fixture
def plain_summary(monkeypatch, tmp_path) -> Iterator[Step]:
    yield from _register(stage_plain_summary.STEP, monkeypatch, tmp_path)


def test_the_pipeline_runs_an_added_step_after_the_six_with_redacted_inputs(
    fake_upstream, plain_summary, run
):
    code, output = run_pipeline_here(run)
    assert code == 0, output
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETE and run.stages_done == 7
    assert run.prompt_versions["7"] == "stage7_plain_summary.v1"
    assert "Stage 7 Plain summary: 1 call(s)" in output
    summary = run.artifacts.get(stage=7)
    assert summary.model_id == CONSOLIDATOR and summary.status == Artifact.Status.OK
    assert summary.kind == "md" and summary.path.read_text().startswith("> FAKE UPSTREAM OUTPUT")
    assert summary.file_path == f"artifacts/{run.pk}/stage-7/{CONSOLIDATOR}.md"
    [call] = [c for c in fake_upstream.calls if c.stage == 7]
    user = call.body["messages"][1]["content"]
    # It read what it declared: the consolidation, the three votes, every draft under its label...
    redact = redactor([*COUNCIL, CONSOLIDATOR])
    assert redact(run.artifacts.get(stage=4).path.read_text()).strip() in user
    assert user.count("- APPROVE (8/10)") == 3
    assert all(f"## Draft {label}" in user for label in run.label_map)
    # ...and nothing of it names a model, though the fake signs every output it writes.
    prompt = json.dumps(call.body["messages"]).lower()
    assert "[council member]" in prompt
    for model in COUNCIL:
        assert model.lower() not in prompt


def test_pages_api_export_and_runpipeline_pick_up_the_added_step(
    fake_upstream, plain_summary, run, clinician_client, api, administrator
):
    code, output = run_pipeline_here(run)
    assert code == 0, output
    live = clinician_client.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="stage-7"' in live and "7 · Plain summary" in live
    page = clinician_client.get(f"/runs/{run.pk}/stages/7/").content.decode()
    assert "Stage 7: Plain summary" in page and 'class="active" aria-current="page">7 · Plain summary' in page
    assert "Select the plain summary for export" in page and "FAKE UPSTREAM OUTPUT" in page
    for number in range(1, 7):  # every other stage's tabs now lead to Stage 7 as well
        tabs = clinician_client.get(f"/runs/{run.pk}/stages/{number}/").content.decode()
        assert f'href="/runs/{run.pk}/stages/7/"' in tabs
    panel = clinician_client.get(f"/runs/patients/{run.patient_id}/panel/").content.decode()
    assert "Seven stages;" in panel
    admin = Client()
    admin.force_login(administrator)
    assert "7 · Plain summary" in admin.get("/admin/runs/artifact/").content.decode()

    detail = api.get(f"/api/runs/{run.pk}").json()
    assert [s["name"] for s in detail["stages"]][-1] == "Plain summary"
    assert detail["stages"][-1]["summary"] == "1 of 1 model" and detail["stages_done"] == 7
    listed = api.get("/api/stages").json()
    assert [s["key"] for s in listed][-1] == "plain_summary"
    assert listed[-1]["inputs"] == [
        {"stage": 4, "key": "consolidation", "required": True},
        {"stage": 5, "key": "final_review", "required": False},
        {"stage": 6, "key": "final_draft", "required": False},
    ]
    summary = run.artifacts.get(stage=7)
    [row] = [a for a in api.get(f"/api/runs/{run.pk}/artifacts").json() if a["stage"] == 7]
    assert row["stage_name"] == "Plain summary" and row["selectable"] is True

    selected = api.post(f"/api/runs/{run.pk}/select", {"artifact_id": summary.pk}, "application/json")
    assert selected.status_code == 200 and selected.json()["selected_artifact_id"] == summary.pk
    assert api.post(f"/api/runs/{run.pk}/export").status_code == 200
    final_md = (run.exports_dir / "final.md").read_text()
    assert f"Stage 7 plain summary by {CONSOLIDATOR}" in final_md
    assert "stage7_plain_summary.v1" in final_md

    before = {stage: fake_upstream.count(stage=stage) for stage in range(1, 8)}
    code, output = run_pipeline_here(run, "--from-stage", "7")
    assert code == 0, output
    assert fake_upstream.count(stage=7) == before[7] + 1
    assert all(fake_upstream.count(stage=stage) == before[stage] for stage in range(1, 7))
    code, listing = run_pipeline_here(run, "--list")
    assert "7/7" in listing


def test_an_added_step_is_gone_once_unregistered(fake_upstream, run, clinician_client, monkeypatch, tmp_path):
    registered = _register(stage_plain_summary.STEP, monkeypatch, tmp_path)
    next(registered)
    assert clinician_client.get(f"/runs/{run.pk}/stages/7/").status_code == 200
    next(registered, None)
    assert clinician_client.get(f"/runs/{run.pk}/stages/7/").status_code == 404
    assert len(STEPS) == 6 and run_pipeline_here(run)[0] == 0
    assert not run.artifacts.filter(stage=7).exists()


def test_an_added_steps_requirement_decides_whether_the_run_completes(
    fake_upstream, run, monkeypatch, tmp_path
):
    """A council step that needs all three of its calls: one model failing it fails the run at that step,
    with the reason, and the six stages before it stay done."""
    code, output = run_pipeline_here(run)
    assert code == 0, output
    strict = dataclasses.replace(
        stage_plain_summary.STEP,
        takers=Takers(Who.COUNCIL, with_output_of="analysis"),
        selectable=False,
        at_least_ok=3,
    )
    registered = _register(strict, monkeypatch, tmp_path)
    next(registered)
    try:
        fake_upstream.script("gemini-2.5-pro", failures=["500"])
        code, output = run_pipeline_here(run, "--from-stage", "7")
        run.refresh_from_db()
        assert code == 1 and run.status == Run.Status.FAILED and run.stages_done == 6
        assert "Stage 7 (Plain summary): only 2 of 3 calls succeeded" in run.error
        assert "gemini-2.5-pro" in run.error
        assert run.artifacts.filter(stage=7, status=Artifact.Status.OK).count() == 2
    finally:
        next(registered, None)
