"""Stage 3 — Revision: each model revises its analysis from the reviews of it (markdown).

Its registry entry, `STEP`, is at the end of the module."""

from __future__ import annotations

from collections.abc import Mapping

from council.schemas import PeerReview
from council.stages.base import (
    CallLimits,
    CompletionClient,
    CouncilInput,
    StageOutput,
    complete_markdown,
    system_user,
)
from council.stages.registry import Call, Input, Kind, Step, StepContext, Takers, Who


def _bullets(items: list[str]) -> str:
    return "\n".join(f"  - {item}" for item in items) if items else "  - (none)"


def reviews_of(label: str, peer_reviews: Mapping[str, PeerReview]) -> str:
    """The reviews of one analysis, each under its reviewer's label (never a model id)."""
    blocks = []
    for reviewer_label in sorted(peer_reviews):
        review_set = peer_reviews[reviewer_label]
        review = next((r for r in review_set.reviews if r.analysis_label == label), None)
        if review is None:
            continue
        ranking = review_set.ranking_best_to_worst
        rank = f"ranked {ranking.index(label) + 1} of {len(ranking)}" if label in ranking else "not ranked"
        blocks.append(
            f"### Reviewer {reviewer_label} ({rank})\n"
            f"- Strengths:\n{_bullets(review.strengths)}\n"
            f"- Weaknesses:\n{_bullets(review.weaknesses)}\n"
            f"- Missing or unclear:\n{_bullets(review.missing_or_unclear)}\n"
            f"- Accuracy issues:\n{_bullets(review.accuracy_issues)}\n"
            f"- Risk of overreach: {review.risk_of_overreach or '(none stated)'}"
        )
    return "\n\n".join(blocks) or "(No peer reviews of your analysis are available; revise it on your own.)"


def build_messages(
    source: CouncilInput, *, label: str, analysis: str, peer_reviews: Mapping[str, PeerReview]
) -> list[dict]:
    system, user = source.prompt(
        STEP.prompt,
        label=label,
        analysis=analysis.strip(),
        reviews=reviews_of(label, peer_reviews),
    )
    return system_user(system, user)


async def run(
    client: CompletionClient,
    model: str,
    source: CouncilInput,
    limits: CallLimits,
    *,
    label: str,
    analysis: str,
    peer_reviews: Mapping[str, PeerReview],
) -> StageOutput:
    messages = build_messages(source, label=label, analysis=analysis, peer_reviews=peer_reviews)
    return await complete_markdown(client, model, messages, limits)


def calls(context: StepContext) -> dict[str, Call]:
    analyses = context.texts("analysis")
    reviews = context.by_label(context.parsed("peer_review"))
    return {
        model: context.call(
            run, model, label=context.labels[model], analysis=analyses[model], peer_reviews=reviews
        )
        for model in context.members
    }


STEP = Step(
    number=3,
    key="revision",
    name="Revision",
    kind=Kind.MARKDOWN,
    prompt="stage3_revision.v4",
    calls=calls,
    takers=Takers(Who.COUNCIL, with_output_of="analysis"),
    inputs=(Input("analysis"), Input("peer_review")),
    checks_numbers=True,
)
