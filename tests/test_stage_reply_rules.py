"""The markdown continuation rule and the JSON retry rule, with a scripted client (no network)."""

from __future__ import annotations

import json

import pytest

from council.schemas import FinalReview
from council.stages import stage1_analysis, stage2_peer_review, stage5_final_review
from council.stages.base import END_MARKER, CallLimits, CouncilInput, ModelFailed
from tests.stage_fakes import ScriptedClient

SOURCE = CouncilInput(
    report_text="=== PAGE 1 / 1 ===\n[text layer]\nTheta/beta 4.1", clinical_context={"Age": "9"}
)
VALID_VOTE = (
    '{"vote":"REVISE","required_changes":["cite p. 1"],"optional_changes":[],"quality_score_1to10":7}'
)


async def test_marker_is_stripped_and_no_continuation_when_present():
    client = ScriptedClient([f"# Analysis\nTheta/beta 4.1 (p. 1).\n{END_MARKER}\n"])
    out = await stage1_analysis.run(client, "m", SOURCE, CallLimits(max_continuations=2))
    assert out.text == "# Analysis\nTheta/beta 4.1 (p. 1).\n"
    assert END_MARKER not in out.text and len(client.calls) == 1 and out.note == ""


async def test_reply_without_marker_is_continued_and_parts_joined():
    client = ScriptedClient(["# Analysis\nTheta/be", f"ta 4.1 (p. 1).\n{END_MARKER}"])
    out = await stage1_analysis.run(client, "m", SOURCE, CallLimits(max_continuations=2))
    assert out.text == "# Analysis\nTheta/beta 4.1 (p. 1).\n"
    follow_up = client.calls[1][1]
    assert follow_up[-2] == {"role": "assistant", "content": "# Analysis\nTheta/be"}
    assert follow_up[-1]["role"] == "user"
    assert follow_up[-1]["content"].startswith("Continue exactly where you stopped")
    assert out.usage.calls == 2 and out.usage.completion_tokens == 10


async def test_continuations_are_bounded_and_the_gap_is_noted():
    client = ScriptedClient(["part one ", "part two ", "part three ", "never asked"])
    out = await stage1_analysis.run(client, "m", SOURCE, CallLimits(max_continuations=2))
    assert len(client.calls) == 3
    assert out.text == "part one part two part three\n"
    assert "may be incomplete" in out.note


async def test_marker_only_reply_is_a_failure():
    with pytest.raises(ModelFailed, match="no text"):
        await stage1_analysis.run(ScriptedClient([END_MARKER]), "m", SOURCE, CallLimits())


async def test_invalid_json_is_sent_back_with_the_error_then_accepted():
    client = ScriptedClient(
        ['{"vote":"APPROVE","required_changes":["x"],"quality_score_1to10":7}', VALID_VOTE]
    )
    out = await stage5_final_review.run(client, "m", SOURCE, CallLimits(json_retries=2), consolidation="# C")
    assert isinstance(out.parsed, FinalReview) and out.parsed.vote == "REVISE"
    assert json.loads(out.text)["quality_score_1to10"] == 7
    retry = client.calls[1][1][-1]
    assert retry["content"].startswith("Your reply was not valid")
    assert "contradictory" in retry["content"]
    assert out.usage.calls == 2


async def test_json_retries_are_bounded_then_the_model_fails_for_the_stage():
    client = ScriptedClient(["nope", "still nope", "no", "never asked"])
    with pytest.raises(ModelFailed, match="after 3 attempt") as caught:
        await stage5_final_review.run(client, "m", SOURCE, CallLimits(json_retries=2), consolidation="# C")
    assert len(client.calls) == 3
    assert caught.value.usage.calls == 3


async def test_peer_review_must_cover_exactly_the_labels_shown():
    analyses = {"A": "mine", "B": "theirs", "C": "another"}
    wrong = json.dumps({"reviews": [{"analysis_label": "A"}], "ranking_best_to_worst": ["A"]})
    right = json.dumps(
        {
            "reviews": [{"analysis_label": "B"}, {"analysis_label": "C"}],
            "ranking_best_to_worst": ["C", "B"],
            "overall_notes": "",
        }
    )
    client = ScriptedClient([wrong, right])
    out = await stage2_peer_review.run(
        client, "m", SOURCE, CallLimits(json_retries=1), own_label="A", analyses=analyses
    )
    assert out.parsed.ranking_best_to_worst == ["C", "B"]
    assert "exactly analyses B, C" in client.calls[1][1][-1]["content"]
