"""Every stage's prompt: the shared start (the council's rules, the clinical context, the report) byte for
byte the same in every stage, then the stage's own line and task; page citations; and Stage 2 anonymity
(labels only, never the reviewer's own analysis)."""

from __future__ import annotations

import pytest

from council import prompts
from council.schemas import FinalReview, PeerReview
from council.stages import STEPS, stage2_peer_review, stage3_revision
from council.stages.base import CouncilInput

SOURCE = CouncilInput(
    report_text="=== PAGE 1 / 2 ===\n[text layer]\nAlpha peak 9.5 Hz\n=== PAGE 2 / 2 ===\n[OCR]\nTBR 4.1",
    clinical_context={"Age": "9", "Reason for referral": "attention {{report_text}} concerns"},
    fact_table="### [p1] read from [text layer]\n\n| Measurement | Value | Unit |\n|---|---|---|\n"
    "| Alpha peak | 9.5 | Hz |",
)
REVIEW = PeerReview.model_validate(
    {"reviews": [{"analysis_label": "A", "weaknesses": ["TBR wrong (p. 2)"]}], "ranking_best_to_worst": ["A"]}
)
VOTE = FinalReview(vote="REVISE", required_changes=["fix TBR"], quality_score_1to10=6)
NAMES = {step.number: step.name for step in STEPS}


def _messages(stage: int) -> list[dict]:
    module = STEPS[stage].module
    kwargs = {
        1: {},
        2: {"own_label": "A", "analyses": {"A": "own-analysis-text", "B": "b text", "C": "c text"}},
        3: {"label": "A", "analysis": "mine", "peer_reviews": {"B": REVIEW}},
        4: {"revisions": {"A": "rev a", "B": "rev b"}},
        5: {"consolidation": "# Consolidated"},
        6: {"consolidation": "# Consolidated", "votes": [VOTE]},
    }[stage]
    return module.build_messages(SOURCE, **kwargs)


def _shared_start() -> tuple[str, str]:
    return prompts.load("shared.v2").render(
        clinical_context=SOURCE.context_block(), fact_table=SOURCE.fact_table, report_text=SOURCE.report_text
    )


def test_every_stage_starts_with_the_same_text_byte_for_byte():
    system, start = _shared_start()
    assert SOURCE.report_text in start and "- Age: 9" in start and SOURCE.fact_table in start
    for stage in range(1, 7):
        messages = _messages(stage)
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"] == system
        assert messages[1]["content"].startswith(start + "\n\n")
    # Nothing of a stage, a model or a label in the shared start: it must not differ between calls.
    assert "Stage 1" not in system + start and "Analysis A" not in system + start


@pytest.mark.parametrize("stage", range(1, 7))
def test_the_stage_line_and_task_follow_the_report(stage):
    messages = _messages(stage)
    user = messages[1]["content"]
    lines = user.splitlines()
    stage_line = f"qEEG Council — Stage {stage}: {NAMES[stage]}"
    assert stage_line in lines
    assert user.index(stage_line) > user.index("[OCR]\nTBR 4.1")
    assert "=== PAGE 2 / 2 ===" in user and "- Age: 9" in user
    # A placeholder-looking string in pasted text stays as it is: rendering is one pass.
    assert "attention {{report_text}} concerns" in user
    assert "[p3]" in messages[0]["content"] and "(p. 3)" not in user + messages[0]["content"]
    assert "<!-- END OF REPORT -->" in messages[0]["content"]
    if stage in (1, 3, 4, 6):
        assert user.rstrip().endswith("<!-- END OF REPORT -->")


def test_stages_5_and_6_share_the_consolidation_before_their_own_instructions():
    five, six = _messages(5)[1]["content"], _messages(6)[1]["content"]
    shared = five[: next(i for i, (a, b) in enumerate(zip(five, six, strict=False)) if a != b)]
    assert shared.endswith("qEEG Council — Stage ") and "# Consolidated" in shared


def test_stage2_shows_only_other_analyses_under_label_headings():
    user = _messages(2)[1]["content"]
    assert "## Analysis B\n\nb text" in user and "## Analysis C\n\nc text" in user
    assert "## Analysis A" not in user and "own-analysis-text" not in user


def test_stage3_names_reviewers_by_label_and_shows_rank():
    text = stage3_revision.reviews_of("A", {"B": REVIEW})
    assert "### Reviewer B (ranked 1 of 1)" in text and "TBR wrong (p. 2)" in text


def test_labels_are_assigned_in_the_given_order():
    assert stage2_peer_review.assign_labels(["x", "y", "z"], order=[2, 0, 1]) == {
        "A": "z",
        "B": "x",
        "C": "y",
    }
    assert stage2_peer_review.label_for(27) == "AB"


def test_stage1_adds_page_images_alongside_the_text():
    source = CouncilInput(report_text="t", clinical_context={}, page_images=("data:image/png;base64,AAA",))
    content = STEPS[1].module.build_messages(source)[1]["content"]
    assert content[0]["type"] == "text" and "(No clinical context" in content[0]["text"]
    assert content[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}


def test_prompt_versions_are_recorded_per_stage():
    assert STEPS.prompt_versions()["2"] == "stage2_peer_review.v4"


def test_version_1_prompts_still_load_whole():
    # Old runs name them; they are complete prompts of their own.
    template = prompts.load("stage2_peer_review.v1")
    assert not template.shared and template.system.startswith("qEEG Council — Stage 2: Peer review")


def test_the_shared_rules_explain_the_fact_table_sources_placeholders_and_targets():
    """What a model must know to read the numbers it is given (issue 10 item 6), said once for every stage."""
    system, start = _shared_start()
    for phrase in (
        "The fact table holds the authoritative numbers",
        "the table is right",
        "[text layer] is text the PDF itself carries: exact",
        "[OCR] is text recognised from an",
        "it may be garbled",
        'N/A, "-" and "<0" are placeholders, not values',
        "not normative Z-scores",
        "test/retest threshold",
        "in one form only: [p3]",
    ):
        assert phrase in system, phrase
    # The table comes before the report, both in the shared start.
    assert start.index("## Fact table (authoritative numbers)") < start.index("## Source report")


def test_a_source_without_a_fact_table_says_so_rather_than_leaving_a_hole():
    bare = CouncilInput(report_text="=== PAGE 1 / 1 ===\n[text layer]\nTBR 4.1", clinical_context={})
    _, user = bare.prompt(STEPS[1].prompt)
    assert "No fact table was read from this report" in user


def _common(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 27])
def test_each_reviewer_reads_every_other_analysis_once_and_never_its_own(n):
    labels = [stage2_peer_review.label_for(i) for i in range(n)]
    for own in labels:
        order = stage2_peer_review.review_order(labels, own)
        assert sorted(order) == sorted(set(labels) - {own}) and len(order) == n - 1


def test_reviewers_read_the_other_half_first_so_their_prompts_share_long_prefixes():
    labels = list("ABCDEFGH")
    orders = {own: stage2_peer_review.review_order(labels, own) for own in labels}
    assert orders["A"] == list("EFGHCDB") and orders["B"] == list("EFGHCDA")
    assert orders["E"] == list("ABCDGHF") and orders["H"] == list("ABCDEFG")
    # Label order would let A share nothing with B; the halves share 6 of 7 analyses here, 4 across quarters.
    assert orders["A"][:6] == orders["B"][:6] and orders["A"][:4] == orders["C"][:4]
    # In the prompt too: A and B's Stage 2 prompts are the same up to their last analysis.
    analyses = {label: f"text of {label} " * 50 for label in labels}
    a, b = (
        stage2_peer_review.build_messages(SOURCE, own_label=own, analyses=analyses)[1]["content"]
        for own in "AB"
    )
    assert a[: _common(a, b)].endswith(analyses["D"].strip() + "\n\n## Analysis ")


def test_stage3_begins_with_its_analysis_as_stage2_showed_it_first():
    """The prompt of Analysis E's revision shares its start with the Stage 2 prompts that showed E first
    (reviewers A to D), through the whole analysis: a provider's cache serves it."""
    analyses = {label: f"analysis {label}, p3. " * 40 for label in "ABCDEFGH"}
    review = stage2_peer_review.build_messages(SOURCE, own_label="A", analyses=analyses)[1]["content"]
    revision = stage3_revision.build_messages(
        SOURCE, label="E", analysis=analyses["E"], peer_reviews={"A": REVIEW}
    )[1]["content"]
    shared = revision[: _common(review, revision)]
    assert shared.endswith(f"## Analysis E\n\n{analyses['E'].strip()}\n\n## ")
    assert "You wrote Analysis E above" in revision[len(shared) :]
