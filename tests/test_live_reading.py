"""What the stage readers compute: the Borda ranking across reviewers, the Stage 5 tally with merged required
changes, and draft diffs against the consolidation."""

from __future__ import annotations

import json

import pytest

from documents.markdown import page_html
from runs import reading, services
from runs.models import Run
from tests.test_stream import make_run

LABELS = {"A": "gpt-5", "B": "claude-sonnet-4-5", "C": "gemini-2.5-pro"}


@pytest.fixture
def run(db) -> Run:
    run = make_run(status=Run.Status.COMPLETE)
    Run.objects.filter(pk=run.pk).update(label_map=LABELS, council_models=list(LABELS.values()))
    run.refresh_from_db()
    return run


def review(own: str, ranking: list[str]) -> str:
    reviews = [
        {
            "analysis_label": label,
            "strengths": [f"{label} is clear"],
            "weaknesses": [],
            "risk_of_overreach": "low",
        }
        for label in sorted(ranking)
    ]
    return json.dumps({"reviews": reviews, "ranking_best_to_worst": ranking, "overall_notes": f"by {own}"})


def record(run: Run, stage: int, model: str, text: str | None, error: str = "") -> None:
    services.artifact_record(
        run_id=run.pk, stage=stage, model_id=model, outcome=services.Outcome(text=text, error=error)
    )


def test_borda_count_ranks_across_reviewers_with_the_labels_revealed(run):
    record(run, 2, "gpt-5", review("A", ["B", "C"]))  # A reviews B and C: B 1 point, C 0
    record(run, 2, "claude-sonnet-4-5", review("B", ["A", "C"]))  # A 1, C 0
    record(run, 2, "gemini-2.5-pro", review("C", ["B", "A"]))  # B 1, A 0
    cards, ranking = reading.peer_reviews(run)
    assert [(r.label, r.model_id, r.points, r.first_places) for r in ranking] == [
        ("B", "claude-sonnet-4-5", 2, 2),  # first for both reviewers who saw it
        ("A", "gpt-5", 1, 1),
        ("C", "gemini-2.5-pro", 0, 0),
    ]
    assert [r.mean_position for r in ranking] == [1.0, 1.5, 2.0]
    gpt = next(c for c in cards if c.model_id == "gpt-5")
    assert gpt.label == "A"
    assert [r["model_id"] for r in gpt.reviews] == ["claude-sonnet-4-5", "gemini-2.5-pro"]
    assert gpt.ranking == [
        {"label": "B", "model_id": "claude-sonnet-4-5"},
        {"label": "C", "model_id": "gemini-2.5-pro"},
    ]


def test_a_failed_reviewer_is_a_card_with_its_reason_and_no_points(run):
    record(run, 2, "gpt-5", review("A", ["C", "B"]))
    record(run, 2, "claude-sonnet-4-5", None, error="Upstream 502 after 5 attempts")
    cards, ranking = reading.peer_reviews(run)
    failed = next(c for c in cards if c.model_id == "claude-sonnet-4-5")
    assert not failed.ok and failed.error == "Upstream 502 after 5 attempts"
    assert [(r.label, r.points) for r in ranking] == [("C", 1), ("B", 0)]


def test_tally_counts_votes_and_merges_the_same_required_change(run):
    vote = lambda v, score, required: json.dumps(  # noqa: E731
        {"vote": v, "required_changes": required, "optional_changes": [], "quality_score_1to10": score}
    )
    record(run, 5, "gpt-5", vote("REVISE", 6, ["Cite the montage.", "Drop the diagnosis."]))
    record(run, 5, "claude-sonnet-4-5", vote("REVISE", 7, ["cite  the montage."]))
    record(run, 5, "gemini-2.5-pro", vote("APPROVE", 9, []))
    tally = reading.final_review_tally(run)
    assert (tally.approve, tally.revise, tally.mean_score) == (1, 2, 7.3)
    # Votes are read in model order; the first wording of a change is kept, and who asked for it is listed.
    assert [(c.number, c.text, c.voters) for c in tally.required_changes] == [
        (1, "cite  the montage.", ["claude-sonnet-4-5", "gpt-5"]),
        (2, "Drop the diagnosis.", ["gpt-5"]),
    ]


def test_draft_diff_marks_added_and_removed_lines_with_context():
    consolidation = "\n".join(f"line {i}" for i in range(1, 21))
    draft = consolidation.replace("line 5", "line five").replace("line 16\n", "")
    lines, added, removed = reading.draft_diff(consolidation, draft)
    assert (added, removed) == (1, 2)
    assert ("del", "line 5") in lines and ("add", "line five") in lines and ("del", "line 16") in lines
    assert ("gap", "…") in lines  # the unchanged stretch between the two edits is cut
    assert ("ctx", "line 10") not in lines
    assert reading.draft_diff("same\ntext", "same\ntext") == ([], 0, 0)


def test_markdown_is_sanitised():
    html = page_html('hi <script>x()</script> <a href="javascript:y()">z</a> ![i](http://t.example/p.png)')
    assert "<script" not in html and "javascript:" not in html and "<img" not in html
    assert "t.example" not in html
