"""runs.exports.export_run: final.md and final.pdf in data/exports/<run_id>/, with the run card, written so that
a failed export never leaves half a file or loses the previous one."""

from __future__ import annotations

# ruff: noqa: RUF001  (Unicode signs in the report are part of what is checked)
import json
from pathlib import Path

import pytest
from django.utils import timezone

from documents import files
from documents.markdown_pdf import ClinicalPDF
from patients.models import Patient, Report
from runs.exports import ExportError, export_run
from runs.models import Artifact, Run
from runs.selectors import final_votes
from tests.export_samples import FINAL_DRAFT, pdf_pages_text, ruled_lines
from tests.run_helpers import add_artifact

COUNCIL = ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"]
PROMPTS = {str(n): f"stage{n}_{name}.v1" for n, name in enumerate(
    ["analysis", "peer_review", "revision", "consolidation", "final_review", "final_draft"], start=1
)}  # fmt: skip


@pytest.fixture
def run(db, data_dir: Path) -> Run:
    patient = Patient.objects.create(label="P-0042", age=34, referral_reason="attention, sleep")
    report = Report.objects.create(
        patient=patient,
        original_name="wavi_2026-11-20.pdf",
        sha256="0" * 64,
        page_count=14,
        status=Report.Status.READY,
    )
    run = Run.objects.create(
        patient=patient,
        report=report,
        council_models=COUNCIL,
        consolidator="claude-sonnet-4-5",
        status=Run.Status.COMPLETE,
        prompt_versions=PROMPTS,
        finished_at=timezone.now(),
    )
    for model_id in COUNCIL[:2]:  # gemini failed in Stage 1: a 2-of-3 run
        add_artifact(run, stage=1, model_id=model_id, text=f"analysis by {model_id}")
    add_artifact(run, stage=1, model_id=COUNCIL[2], text=None, error="model_not_found")
    add_artifact(
        run, stage=4, model_id="claude-sonnet-4-5", text="# Consolidation\n\nTheta excess, Z = +2.6.\n"
    )
    votes = {
        "gpt-5": {"vote": "APPROVE", "required_changes": [], "optional_changes": ["cite norms"],
                  "quality_score_1to10": 8},
        "claude-sonnet-4-5": {"vote": "REVISE", "required_changes": ["state the montage", "P300 norm"],
                              "optional_changes": [], "quality_score_1to10": 6},
    }  # fmt: skip
    for model_id, vote in votes.items():
        add_artifact(run, stage=5, model_id=model_id, text=json.dumps(vote))
    add_artifact(run, stage=6, model_id="gpt-5", text=FINAL_DRAFT)
    return run


def stage(run: Run, number: int, model_id: str) -> Artifact:
    return run.artifacts.get(stage=number, model_id=model_id)


def test_export_writes_both_files_under_the_run_folder(run, data_dir):
    paths = export_run(run=run, artifact=stage(run, 6, "gpt-5"))
    folder = data_dir / "exports" / str(run.pk)
    assert paths.md_path == folder / "final.md"
    assert paths.pdf_path == folder / "final.pdf"
    assert paths.pdf_path.read_bytes().startswith(b"%PDF-")
    assert sorted(p.name for p in folder.iterdir()) == ["final.md", "final.pdf"]


def test_final_md_is_the_selected_text_then_the_run_card(run):
    paths = export_run(run=run, artifact=stage(run, 6, "gpt-5"))
    md = paths.md_path.read_text(encoding="utf-8")
    assert md.startswith("> **Draft — not signed.**")
    assert md.index("## Clinical context") < md.index(FINAL_DRAFT.rstrip()) < md.index("## Run card")
    card = md[md.index("## Run card") :]
    assert "| Patient | P-0042 |" in card
    assert "| Report | wavi_2026-11-20.pdf (14 pages, uploaded " in card
    assert "| Council | gpt-5, claude-sonnet-4-5, gemini-2.5-pro (2 of 3 completed Stage 1) |" in card
    assert "| Consolidator | claude-sonnet-4-5 |" in card
    assert "| Exported text | Stage 6 final draft by gpt-5 |" in card
    assert "| Stage 5 vote — gpt-5 | APPROVE · quality 8/10 · 0 required changes · 1 optional |" in card
    assert "| Stage 5 vote — claude-sonnet-4-5 | REVISE · quality 6/10 · 2 required changes |" in card
    assert "| Stage 5 vote — gemini-2.5-pro | no vote |" in card
    assert "stage1_analysis.v1, stage2_peer_review.v1" in card and "stage6_final_draft.v1 |" in card


def test_final_pdf_has_report_tables_unicode_and_run_card(run):
    paths = export_run(run=run, artifact=stage(run, 6, "gpt-5"))
    data = paths.pdf_path.read_bytes()
    pages = pdf_pages_text(data)
    text = "\n".join(pages)
    assert "qEEG Council report — P-0042" in pages[0]
    assert "Theta θ 4–8 Hz 31.7 29.5 21.0 +2.6 +2.3 ↑" in text
    for sign in ("µV", "−2.3", "→", "±"):
        assert sign in text
    card = text[text.index("Run card") :]
    assert "P-0042" in card and "wavi_2026-11-20.pdf" in card
    assert "APPROVE · quality 8/10" in card and "REVISE · quality 6/10" in card
    assert "Stage 6 final draft by gpt-5" in card
    # The 8-column band-power table is drawn with its 9 column borders.
    assert ruled_lines(data, page=0)[1] >= 9


def test_stage4_consolidation_exports_too(run):
    paths = export_run(run=run, artifact=stage(run, 4, "claude-sonnet-4-5"))
    md = paths.md_path.read_text(encoding="utf-8")
    assert "\n# Consolidation\n" in md
    assert "| Exported text | Stage 4 consolidation by claude-sonnet-4-5 |" in md
    assert "Theta excess, Z = +2.6." in "".join(pdf_pages_text(paths.pdf_path.read_bytes()))


def test_a_failed_stage5_call_is_reported_with_its_reason(run):
    add_artifact(run, stage=5, model_id="gemini-2.5-pro", text=None, error="Upstream 503: cooling down\nmore")
    md = export_run(run=run, artifact=stage(run, 6, "gpt-5")).md_path.read_text(encoding="utf-8")
    assert "| Stage 5 vote — gemini-2.5-pro | no vote (failed: Upstream 503: cooling down) |" in md


def test_the_card_reads_votes_through_the_schema_like_the_stage5_page(run):
    contradictory = {"vote": "APPROVE", "required_changes": ["fix it"], "quality_score_1to10": 8}
    add_artifact(run, stage=5, model_id="gemini-2.5-pro", text=json.dumps(contradictory))
    assert "gemini-2.5-pro" not in [vote["model_id"] for vote in final_votes(run)]
    md = export_run(run=run, artifact=stage(run, 6, "gpt-5")).md_path.read_text(encoding="utf-8")
    assert "| Stage 5 vote — gemini-2.5-pro | vote unreadable |" in md


def test_unexportable_artifacts_are_refused_with_a_reason(run, django_user_model):
    with pytest.raises(ExportError, match="not a finished markdown report"):
        export_run(run=run, artifact=stage(run, 1, "gemini-2.5-pro"))
    with pytest.raises(ExportError, match="not a finished markdown report"):
        export_run(run=run, artifact=stage(run, 5, "gpt-5"))
    other = Run.objects.create(
        patient=run.patient, report=run.report, council_models=COUNCIL, consolidator="gpt-5"
    )
    with pytest.raises(ExportError, match="belongs to run"):
        export_run(run=other, artifact=stage(run, 6, "gpt-5"))
    stage(run, 6, "gpt-5").path.unlink()
    with pytest.raises(ExportError, match="could not be read"):
        export_run(run=run, artifact=stage(run, 6, "gpt-5"))
    assert not (run.exports_dir / "final.pdf").exists()


def test_failure_mid_render_keeps_the_previous_export_whole(run, monkeypatch):
    first = export_run(run=run, artifact=stage(run, 6, "gpt-5"))
    previous_pdf = first.pdf_path.read_bytes()
    previous_md = first.md_path.read_text(encoding="utf-8")

    def crash(self, *args, **kwargs):
        raise OSError("disk went away while laying out page 2")

    # Both the rich layout and its plain-text fallback end in FPDF.output(): break it there.
    monkeypatch.setattr(ClinicalPDF, "output", crash)
    with pytest.raises(OSError, match="disk went away"):
        export_run(run=run, artifact=stage(run, 4, "claude-sonnet-4-5"))
    assert first.pdf_path.read_bytes() == previous_pdf
    assert first.md_path.read_text(encoding="utf-8") == previous_md
    assert sorted(p.name for p in run.exports_dir.iterdir()) == ["final.md", "final.pdf"]


def test_failure_while_writing_leaves_no_temporary_file(run, monkeypatch):
    first = export_run(run=run, artifact=stage(run, 6, "gpt-5"))
    previous_pdf = first.pdf_path.read_bytes()
    real_fsync = files.os.fsync
    calls = []

    def fsync_then_fail(fd):
        calls.append(fd)
        if len(calls) == 2:  # final.md is on disk under its temporary name; final.pdf is half written
            raise OSError("No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync_then_fail)
    with pytest.raises(OSError, match="No space left"):
        export_run(run=run, artifact=stage(run, 4, "claude-sonnet-4-5"))
    assert len(calls) == 2
    assert first.pdf_path.read_bytes() == previous_pdf
    assert FINAL_DRAFT.rstrip() in first.md_path.read_text(encoding="utf-8")
    assert sorted(p.name for p in run.exports_dir.iterdir()) == ["final.md", "final.pdf"]


def test_exporting_again_replaces_the_files(run):
    export_run(run=run, artifact=stage(run, 6, "gpt-5"))
    paths = export_run(run=run, artifact=stage(run, 4, "claude-sonnet-4-5"))
    assert "\n# Consolidation\n" in paths.md_path.read_text(encoding="utf-8")
    assert "Consolidation" in pdf_pages_text(paths.pdf_path.read_bytes())[0]
