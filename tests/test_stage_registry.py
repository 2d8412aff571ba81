"""The step registry (council/stages/): what the six steps are, who takes part in each, when a step counts as
done, what its call builder may see (declared inputs only, redacted), and the entries it refuses. No
database: council/ knows no ORM."""

from __future__ import annotations

import dataclasses

import pytest

from council import prompts
from council.schemas import FinalReview, PeerReview
from council.stages import STEPS
from council.stages.base import CallLimits, CouncilInput
from council.stages.registry import Input, Kind, Registry, Step, StepCannotStart, Takers, Who

COUNCIL = ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"]
CONSOLIDATOR = "claude-opus-4"
SOURCE = CouncilInput(report_text="=== PAGE 1 / 1 ===\n[text layer]\nTBR 4.1", clinical_context={})
VOTE = '{"vote": "REVISE", "required_changes": ["gpt-5 says: fix p. 1"], "quality_score_1to10": 6}'


def test_the_six_steps_in_run_order():
    assert [(s.number, s.key, s.name, s.kind) for s in STEPS] == [
        (1, "analysis", "Analysis", Kind.MARKDOWN),
        (2, "peer_review", "Peer review", Kind.JSON),
        (3, "revision", "Revision", Kind.MARKDOWN),
        (4, "consolidation", "Consolidation", Kind.MARKDOWN),
        (5, "final_review", "Final review", Kind.JSON),
        (6, "final_draft", "Final draft", Kind.MARKDOWN),
    ]
    assert STEPS["peer_review"].schema is PeerReview and STEPS["final_review"].schema is FinalReview
    assert [s.number for s in STEPS.selectable] == [4, 6] and STEPS.selection_step.number == 6
    assert 6 in STEPS and "final_draft" in STEPS and 7 not in STEPS and "plain_summary" not in STEPS
    assert STEPS.selectable_phrase() == "a Stage 6 final draft or the Stage 4 consolidation"
    assert [s.by_consolidator for s in STEPS] == [False, False, False, True, False, False]
    assert STEPS.requirement(STEPS[4]).startswith("needs at least one revision;")
    for step in STEPS:
        assert step.module.STEP is step
        assert (
            f"qEEG Council — Stage {step.number}: {step.name}" in prompts.load(step.prompt).user.splitlines()
        )


@pytest.mark.parametrize(
    ("analysed", "expected"),
    [
        # number → who takes part, given which models wrote a Stage 1 analysis
        (COUNCIL, {1: COUNCIL, 2: COUNCIL, 3: COUNCIL, 4: [CONSOLIDATOR], 5: COUNCIL, 6: COUNCIL}),
        (
            ["gpt-5", "gemini-2.5-pro"],
            {
                1: COUNCIL,
                2: ["gpt-5", "gemini-2.5-pro"],
                3: ["gpt-5", "gemini-2.5-pro"],
                4: [CONSOLIDATOR],
                5: ["gpt-5", "gemini-2.5-pro"],
                6: ["gpt-5", "gemini-2.5-pro"],
            },
        ),
        # A lone analysis has no peers: peer review is skipped, the rest go on with that one member.
        (
            ["gemini-2.5-pro"],
            {1: COUNCIL, 2: [], 3: ["gemini-2.5-pro"], 4: [CONSOLIDATOR], 6: ["gemini-2.5-pro"]},
        ),
        ([], {1: COUNCIL, 2: [], 3: [], 4: [CONSOLIDATOR], 5: []}),
    ],
)
def test_who_takes_part_in_each_step(analysed, expected):
    for number, members in expected.items():
        got = STEPS.participants(
            number, council=COUNCIL, consolidator=CONSOLIDATOR, succeeded={1: set(analysed)}
        )
        assert got == members, number


def test_a_step_is_done_with_enough_successes_or_nothing_to_do():
    analysis = STEPS["analysis"]
    assert analysis.satisfied(ok=1, total=3) and analysis.satisfied(ok=0, total=0)
    assert not analysis.satisfied(ok=0, total=3)
    strict = dataclasses.replace(analysis, at_least_ok=3)
    assert not strict.satisfied(ok=2, total=3) and strict.satisfied(ok=3, total=3)
    assert strict.satisfied(ok=2, total=2)  # two takers cannot give three: both must succeed


def _context(number: int, outputs: dict[int, dict[str, str]]):
    step = STEPS[number]
    members = STEPS.participants(
        number,
        council=COUNCIL,
        consolidator=CONSOLIDATOR,
        succeeded={n: set(texts) for n, texts in outputs.items()},
    )
    return STEPS.context(
        step,
        source=SOURCE,
        client=None,
        limits=CallLimits(),
        members=members,
        labels={"gpt-5": "A", "claude-sonnet-4-5": "B", "gemini-2.5-pro": "C"},
        model_ids=[*COUNCIL, CONSOLIDATOR],
        outputs=outputs,
    )


def test_a_step_sees_its_declared_inputs_redacted_and_parsed():
    outputs = {
        1: {m: f"Analysis by {m.upper()}: TBR 4.1 (p. 1)" for m in COUNCIL},
        4: {CONSOLIDATOR: f"# Consolidated by {CONSOLIDATOR}\nAs claude-sonnet-4-5 and gpt-5 said…"},
        5: {"gpt-5": VOTE, "gemini-2.5-pro": "not json at all"},
    }
    context, unreadable = _context(6, outputs)
    [consolidation] = context.texts("consolidation").values()
    assert (
        consolidation == "# Consolidated by [council member]\nAs [council member] and [council member] said…"
    )
    votes = context.parsed("final_review")
    assert list(votes) == ["gpt-5"] and votes["gpt-5"].required_changes == ["[council member] says: fix p. 1"]
    assert [(u.step, u.model_id) for u in unreadable] == [("final_review", "gemini-2.5-pro")]
    with pytest.raises(KeyError, match="does not declare 'analysis'"):
        context.texts("analysis")  # Stage 6 does not read the analyses, so it is not given them
    calls = STEPS[6].calls(context)
    assert list(calls) == COUNCIL


def test_a_missing_required_input_stops_the_step_before_any_call():
    with pytest.raises(StepCannotStart, match="no revision to work from"):
        _context(4, {1: {"gpt-5": "a"}})
    with pytest.raises(StepCannotStart, match="no consolidation to work from"):
        _context(5, {1: {"gpt-5": "a"}})


def _step(number: int, key: str, **changes) -> Step:
    base = Step(number=number, key=key, name=key.title(), kind=Kind.MARKDOWN, prompt="p", calls=dict)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("steps", "complaint"),
    [
        ([_step(1, "a"), _step(1, "b")], "already registered"),
        ([_step(1, "a"), _step(2, "a")], "already called 'a'"),
        ([_step(2, "a"), _step(1, "b")], "must come after"),
        ([_step(1, "a", inputs=(Input("b"),)), _step(2, "b")], "reads 'b', which is not earlier"),
        ([_step(1, "a", takers=Takers(Who.COUNCIL, with_output_of="a"))], "reads 'a', which is not earlier"),
        ([_step(1, "a", kind=Kind.JSON)], "a JSON step has a schema"),
        ([_step(1, "a", kind=Kind.JSON, schema=FinalReview, selectable=True)], "only markdown"),
        ([_step(0, "a")], "start at 1"),
    ],
)
def test_the_registry_refuses_entries_that_do_not_fit(steps, complaint):
    with pytest.raises(ValueError, match=complaint):
        Registry(steps)


def test_a_step_another_reads_cannot_be_unregistered():
    registry = Registry([_step(1, "a"), _step(2, "b", inputs=(Input("a"),))])
    with pytest.raises(ValueError, match="another step reads 'a'"):
        registry.unregister("a")
    registry.unregister("b")
    assert registry.numbers == [1]
