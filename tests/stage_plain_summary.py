"""A step that exists only in tests: Stage 7, a plain-language summary by the consolidator, written from the
consolidation, the votes and the final drafts. Registered by tests that show a new step needs nothing but
its module, its prompt file and one registration (tests/test_stage_added.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from council.schemas import FinalReview
from council.stages.base import (
    CallLimits,
    CompletionClient,
    CouncilInput,
    StageOutput,
    complete_markdown,
    system_user,
)
from council.stages.registry import Call, Input, Kind, Step, StepContext, Takers, Who

PROMPT_FILE = Path(__file__).resolve().parent / "prompts" / "stage7_plain_summary.v1.md"


def build_messages(
    source: CouncilInput, *, consolidation: str, votes: Sequence[FinalReview], drafts: Mapping[str, str]
) -> list[dict]:
    system, user = source.prompt(
        STEP.prompt,
        consolidation=consolidation.strip(),
        votes="\n".join(f"- {vote.vote} ({vote.quality_score_1to10}/10)" for vote in votes) or "(none)",
        drafts="\n\n".join(f"## Draft {label}\n\n{text.strip()}" for label, text in sorted(drafts.items())),
    )
    return system_user(system, user)


async def run(
    client: CompletionClient,
    model: str,
    source: CouncilInput,
    limits: CallLimits,
    *,
    consolidation: str,
    votes: Sequence[FinalReview],
    drafts: Mapping[str, str],
) -> StageOutput:
    messages = build_messages(source, consolidation=consolidation, votes=votes, drafts=drafts)
    return await complete_markdown(client, model, messages, limits)


def calls(context: StepContext) -> dict[str, Call]:
    consolidation = next(iter(context.texts("consolidation").values()))
    votes = [vote for _, vote in sorted(context.parsed("final_review").items())]
    drafts = context.by_label(context.texts("final_draft"))
    return {
        model: context.call(run, model, consolidation=consolidation, votes=votes, drafts=drafts)
        for model in context.members
    }


STEP = Step(
    number=7,
    key="plain_summary",
    name="Plain summary",
    kind=Kind.MARKDOWN,
    prompt="stage7_plain_summary.v1",
    calls=calls,
    takers=Takers(Who.CONSOLIDATOR),
    inputs=(Input("consolidation", required=True), Input("final_review"), Input("final_draft")),
    selectable=True,
)
