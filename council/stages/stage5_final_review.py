"""Stage 5 — Final review: each council model votes on the consolidation (JSON)."""

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

STAGE = 5
NAME = "Final review"
KIND = "json"


def build_messages(source: CouncilInput, *, consolidation: str) -> list[dict]:
    system, user = source.prompt(
        STAGE,
        consolidation=consolidation.strip(),
        json_example=schemas.example_json(STAGE),
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
