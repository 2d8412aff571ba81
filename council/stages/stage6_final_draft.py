"""Stage 6 — Final draft: each council model writes the final report from the consolidation and the
Stage 5 required changes (markdown). The clinician picks one of these (or the consolidation).

Each draft ends by saying, per numbered required change, whether it applied it and why; that section is cut
off the stored draft and kept beside it (`StageOutput.details`, read by council/disagreement.py), so the
write-up holds only the report and the page can show each change against each draft.

Its registry entry, `STEP`, is at the end of the module."""

from __future__ import annotations

from collections.abc import Sequence

from council import disagreement
from council.schemas import FinalReview
from council.stages.base import (
    CallLimits,
    CompletionClient,
    CouncilInput,
    ModelFailed,
    StageOutput,
    complete_markdown,
    system_user,
)
from council.stages.registry import Call, Input, Kind, Step, StepContext, Takers, Who


def _numbered(items: list[str], empty: str) -> str:
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1)) if items else empty


def required_changes(votes: Sequence[FinalReview]) -> list[disagreement.PooledChange]:
    """The votes' required changes as the prompt numbers them (the same change asked twice is one)."""
    return disagreement.pool_required_changes(("", vote.required_changes) for vote in votes)


def build_messages(source: CouncilInput, *, consolidation: str, votes: Sequence[FinalReview]) -> list[dict]:
    # Changes are pooled without saying who asked for them: the drafts answer the council, not a member.
    required = [change.text for change in required_changes(votes)]
    optional = [change for vote in votes for change in vote.optional_changes]
    no_votes = "(No final review votes are available.)" if not votes else "(None: every vote approved.)"
    system, user = source.prompt(
        STEP.prompt,
        consolidation=consolidation.strip(),
        required_changes=_numbered(required, no_votes),
        optional_changes=_numbered(optional, "(None.)"),
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
) -> StageOutput:
    messages = build_messages(source, consolidation=consolidation, votes=votes)
    output = await complete_markdown(client, model, messages, limits)
    changes = required_changes(votes)
    output.text, statement = disagreement.split_applied(output.text, len(changes))
    if not output.text.strip():
        raise ModelFailed("the draft holds nothing but its applied-or-not section", usage=output.usage)
    output.details = {"required_changes": [change.text for change in changes], **statement}
    return output


def calls(context: StepContext) -> dict[str, Call]:
    consolidation = next(iter(context.texts("consolidation").values()))
    votes = [vote for _, vote in sorted(context.parsed("final_review").items())]
    return {
        model: context.call(run, model, consolidation=consolidation, votes=votes) for model in context.members
    }


STEP = Step(
    number=6,
    key="final_draft",
    name="Final draft",
    kind=Kind.MARKDOWN,
    prompt="stage6_final_draft.v4",
    calls=calls,
    takers=Takers(Who.COUNCIL, with_output_of="analysis"),
    inputs=(Input("consolidation", required=True), Input("final_review")),
    selectable=True,
    checks_numbers=True,
)
