"""Stage 2 and Stage 5 JSON: the one schema module accepts what SPEC.md describes and refuses the rest."""

from __future__ import annotations

import json

import pytest

from council import schemas
from council.stages import STEPS


def _review(label: str) -> dict:
    return {
        "analysis_label": label,
        "strengths": ["cites pages"],
        "weaknesses": [],
        "missing_or_unclear": [],
        "accuracy_issues": ["theta value wrong (p. 2)"],
        "risk_of_overreach": "low",
    }


def _peer(labels: list[str], ranking: list[str] | None = None) -> str:
    return json.dumps(
        {
            "reviews": [_review(label) for label in labels],
            "ranking_best_to_worst": ranking if ranking is not None else labels,
            "overall_notes": "fine",
        }
    )


def test_peer_review_accepts_one_review_per_expected_label():
    review = schemas.parse_peer_review(_peer(["B", "C"], ["C", "B"]), expected_labels=["B", "C"])
    assert [r.analysis_label for r in review.reviews] == ["B", "C"]
    assert review.ranking_best_to_worst == ["C", "B"]


def test_peer_review_accepts_a_json_fence_with_prose_around():
    text = "Here you go:\n```json\n" + _peer(["A"]) + "\n```\nThanks."
    assert schemas.parse_peer_review(text, expected_labels=["A"]).reviews[0].analysis_label == "A"


@pytest.mark.parametrize(
    ("labels", "ranking", "expected", "complaint"),
    [
        (["B"], ["B"], ["B", "C"], "exactly analyses B, C"),
        (["A", "B", "C"], ["A", "B", "C"], ["B", "C"], "exactly analyses B, C"),
        (["B", "B"], ["B", "B"], ["B"], "more than one review for analysis B"),
        (["B", "C"], ["B"], ["B", "C"], "ranking_best_to_worst"),
        (["B", "C"], ["B", "C", "D"], ["B", "C"], "ranking_best_to_worst"),
    ],
)
def test_peer_review_refuses_wrong_labels_or_ranking(labels, ranking, expected, complaint):
    with pytest.raises(schemas.InvalidReply, match=complaint):
        schemas.parse_peer_review(_peer(labels, ranking), expected_labels=expected)


def test_peer_review_refuses_a_reply_that_is_not_json():
    with pytest.raises(schemas.InvalidReply, match=r"no JSON object|not valid JSON"):
        schemas.parse_peer_review("I think analysis B is best.", expected_labels=["B"])


def test_final_review_accepts_approve_without_required_changes():
    vote = schemas.parse_final_review(
        '{"vote":"approve","required_changes":[],"optional_changes":["shorter"],"quality_score_1to10":"9"}'
    )
    assert (vote.vote, vote.quality_score_1to10) == ("APPROVE", 9)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ('{"vote":"APPROVE","required_changes":["fix p. 2"],"quality_score_1to10":8}', "contradictory"),
        ('{"vote":"REVISE","required_changes":["x"],"quality_score_1to10":11}', "quality_score_1to10"),
        ('{"vote":"REVISE","required_changes":["x"],"quality_score_1to10":0}', "quality_score_1to10"),
        ('{"vote":"REVISE","required_changes":["x"],"quality_score_1to10":7.5}', "whole number"),
        ('{"vote":"MAYBE","quality_score_1to10":5}', "vote"),
        ('{"vote":"REVISE","required_changes":["x"]}', "quality_score_1to10"),
        ("[1, 2]", "not an object"),
    ],
)
def test_final_review_refuses_invalid_votes(body, complaint):
    with pytest.raises(schemas.InvalidReply, match=complaint):
        schemas.parse_final_review(body)


def test_parse_artifact_reads_back_what_the_pipeline_stores():
    stored = schemas.parse_final_review('{"vote":"REVISE","required_changes":["a"],"quality_score_1to10":6}')
    again = STEPS.parse_artifact(5, stored.model_dump_json(indent=2))
    assert again == stored
    with pytest.raises(ValueError, match="markdown"):
        STEPS.parse_artifact(3, "# text")
