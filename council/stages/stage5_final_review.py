"""Stage 5 — Final review: each council model votes on the consolidation (JSON).

Its registry entry, `STEP`, is at the end of the module."""

from __future__ import annotations

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


def build_messages(source: CouncilInput, *, consolidation: str) -> list[dict]:
    system, user = source.prompt(
        STEP.prompt,
        consolidation=consolidation.strip(),
        json_example=schemas.example_json(schemas.FinalReview),
    )
    return system_user(system, user)


async def run(
    client: CompletionClient, model: str, source: CouncilInput, limits: CallLimits, *, consolidation: str
) -> StageOutput:
    return await complete_json(
        client,
        model,
        build_messages(source, consolidation=consolidation),
        limits,
        parse=schemas.parse_final_review,
        dump=lambda vote: vote.model_dump_json(indent=2),
        what="final review JSON",
    )


def calls(context: StepContext) -> dict[str, Call]:
    consolidation = next(iter(context.texts("consolidation").values()))
    return {model: context.call(run, model, consolidation=consolidation) for model in context.members}


STEP = Step(
    number=5,
    key="final_review",
    name="Final review",
    kind=Kind.JSON,
    schema=schemas.FinalReview,
    prompt="stage5_final_review.v3",
    calls=calls,
    takers=Takers(Who.COUNCIL, with_output_of="analysis"),
    inputs=(Input("consolidation", required=True),),
)
