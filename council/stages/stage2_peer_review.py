"""Stage 2 — Peer review: each reviewer reviews the other models' analyses, anonymized as A/B/C… (JSON).

Anonymity: analyses are shown only under their run's labels; a reviewer is never shown its own analysis, and
no model id is ever written into the prompt. The label map lives on the run, for the UI alone.
Its registry entry, `STEP`, is at the end of the module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from council import schemas
from council.stages.base import (
    CallLimits,
    CompletionClient,
    CouncilInput,
    StageOutput,
    complete_json,
    system_user,
)
from council.stages.registry import Call, Input, Kind, Step, StepContext, Takers, Who


def assign_labels(models: list[str], *, order: list[int] | None = None) -> dict[str, str]:
    """label → model id for a run: A, B, C … in the given order (the caller shuffles it once per run)."""
    ordered = [models[i] for i in order] if order is not None else list(models)
    return {label_for(i): model for i, model in enumerate(ordered)}


def label_for(index: int) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return letters[index] if index < 26 else letters[index // 26 - 1] + letters[index % 26]


def _label_key(label: str) -> tuple[int, str]:
    return len(label), label  # A … Z, then AA, AB …


def review_order(labels: Iterable[str], own_label: str) -> list[str]:
    """The order a reviewer reads the others' analyses in: the labels split in halves, the other half first,
    then its own half split the same way. Every reviewer of one half then begins with the same analyses (the
    other half), the reviewers of one quarter with more, and so on, so the prompts of a stage share long
    prefixes whatever order they reach the provider in: with 8 analyses of one length, 57 % of the analysis
    text a stage sends is a prefix an earlier reviewer's prompt sent, against 38 % in plain label order (each reviewer's
    own analysis, which it never sees, cuts a label-ordered prefix short)."""
    group = sorted(set(labels), key=_label_key)
    order: list[str] = []
    while len(group) > 1:
        half = len(group) // 2
        first, second = group[:half], group[half:]
        mine, other = (first, second) if own_label in first else (second, first)
        order += other
        group = mine
    return order + [label for label in group if label != own_label]


def analyses_to_review(own_label: str, analyses: Mapping[str, str]) -> dict[str, str]:
    """The analyses a reviewer sees: everyone's but its own, in `review_order`."""
    return {label: analyses[label] for label in review_order(analyses, own_label)}


def analysis_block(label: str, text: str) -> str:
    """One analysis as every prompt shows it (Stage 3's shows its own the same way, for the shared prefix)."""
    return f"## Analysis {label}\n\n{text.strip()}"


def build_messages(source: CouncilInput, *, own_label: str, analyses: Mapping[str, str]) -> list[dict]:
    shown = analyses_to_review(own_label, analyses)
    body = "\n\n".join(analysis_block(label, text) for label, text in shown.items())
    system, user = source.prompt(
        STEP.prompt,
        analyses=body,
        labels=", ".join(sorted(shown, key=_label_key)),
        json_example=schemas.example_json(schemas.PeerReview),
    )
    return system_user(system, user)


async def run(
    client: CompletionClient,
    model: str,
    source: CouncilInput,
    limits: CallLimits,
    *,
    own_label: str,
    analyses: Mapping[str, str],
) -> StageOutput:
    expected = list(analyses_to_review(own_label, analyses))
    return await complete_json(
        client,
        model,
        build_messages(source, own_label=own_label, analyses=analyses),
        limits,
        parse=lambda text: schemas.parse_peer_review(text, expected_labels=expected),
        dump=lambda review: review.model_dump_json(indent=2),
        what="peer review JSON",
    )


def calls(context: StepContext) -> dict[str, Call]:
    analyses = context.by_label(context.texts("analysis"))
    return {
        model: context.call(run, model, own_label=context.labels[model], analyses=analyses)
        for model in context.members
    }


STEP = Step(
    number=2,
    key="peer_review",
    name="Peer review",
    kind=Kind.JSON,
    schema=schemas.PeerReview,
    prompt="stage2_peer_review.v4",
    calls=calls,
    takers=Takers(Who.COUNCIL, with_output_of="analysis", at_least=2),  # a lone analysis has no peers
    inputs=(Input("analysis"),),
)
