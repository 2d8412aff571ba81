"""Stage 4 — Consolidation: the run's consolidator merges all revisions into one report (markdown).

Its registry entry, `STEP`, is at the end of the module."""

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
from council.stages.registry import Call, Input, Kind, Step, StepContext, Takers, Who


def build_messages(source: CouncilInput, *, revisions: Mapping[str, str]) -> list[dict]:
    if not revisions:
        raise ValueError("consolidation needs at least one revision")
    body = "\n\n".join(f"## Revision {label}\n\n{revisions[label].strip()}" for label in sorted(revisions))
    system, user = source.prompt(
        STEP.prompt,
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


def calls(context: StepContext) -> dict[str, Call]:
    revisions = context.by_label(context.texts("revision"))
    return {model: context.call(run, model, revisions=revisions) for model in context.members}


STEP = Step(
    number=4,
    key="consolidation",
    name="Consolidation",
    kind=Kind.MARKDOWN,
    prompt="stage4_consolidation.v2",
    calls=calls,
    takers=Takers(Who.CONSOLIDATOR),
    inputs=(Input("revision", required=True),),
    selectable=True,
    checks_numbers=True,
)
