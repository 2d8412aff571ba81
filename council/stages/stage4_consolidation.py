"""Stage 4 — Consolidation: the run's consolidator merges all revisions into one report (markdown)."""

from __future__ import annotations

from collections.abc import Mapping

from council.stages.base import (
    CallLimits,
    CompletionClient,
    CouncilInput,
    StageOutput,
    complete_markdown,
    system_user,
)

STAGE = 4
NAME = "Consolidation"
KIND = "md"


def build_messages(source: CouncilInput, *, revisions: Mapping[str, str]) -> list[dict]:
    if not revisions:
        raise ValueError("consolidation needs at least one revision")
    body = "\n\n".join(f"## Revision {label}\n\n{revisions[label].strip()}" for label in sorted(revisions))
    system, user = source.prompt(
        STAGE,
        revisions=body,
        count=str(len(revisions)),
    )
    return system_user(system, user)


async def run(
    client: CompletionClient,
    model: str,
    source: CouncilInput,
    limits: CallLimits,
    *,
    revisions: Mapping[str, str],
) -> StageOutput:
    return await complete_markdown(client, model, build_messages(source, revisions=revisions), limits)
