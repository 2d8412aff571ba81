"""Stage 4 — Consolidation: the run's consolidator merges all revisions into one report (markdown), ending
with where the council disagreed and who held the minority view, by revision label (council/disagreement.py
reads it; a consolidation without a readable section is kept, with a note saying so).

Its registry entry, `STEP`, is at the end of the module."""

from __future__ import annotations

from collections.abc import Mapping

from council import disagreement
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
    output = await complete_markdown(client, model, build_messages(source, revisions=revisions), limits)
    section = disagreement.read_disagreements(output.text, revisions)
    if section.problem:
        missing = f"Where the council disagreed is not stated: {section.problem}."
        output.note = f"{output.note} {missing}".strip()
    return output


def calls(context: StepContext) -> dict[str, Call]:
    revisions = context.by_label(context.texts("revision"))
    return {model: context.call(run, model, revisions=revisions) for model in context.members}


STEP = Step(
    number=4,
    key="consolidation",
    name="Consolidation",
    kind=Kind.MARKDOWN,
    prompt="stage4_consolidation.v4",
    calls=calls,
    takers=Takers(Who.CONSOLIDATOR),
    inputs=(Input("revision", required=True),),
    selectable=True,
    checks_numbers=True,
)
