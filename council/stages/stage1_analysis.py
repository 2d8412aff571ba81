"""Stage 1 — Analysis: each council model analyses the report on its own (markdown).

Its registry entry, `STEP`, is at the end of the module (every step module ends with one)."""

from __future__ import annotations

from council.stages.base import (
    CallLimits,
    CompletionClient,
    CouncilInput,
    StageOutput,
    complete_markdown,
    system_user,
)
from council.stages.registry import Call, Kind, Step, StepContext, Takers, Who


def build_messages(source: CouncilInput) -> list[dict]:
    system, user = source.prompt(STEP.prompt)
    if not source.page_images:
        return system_user(system, user)
    # The page images go with the text (never instead of it): maps and charts carry what OCR misses.
    parts: list[dict] = [{"type": "text", "text": user}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in source.page_images]
    return system_user(system, parts)


async def run(client: CompletionClient, model: str, source: CouncilInput, limits: CallLimits) -> StageOutput:
    return await complete_markdown(client, model, build_messages(source), limits)


def calls(context: StepContext) -> dict[str, Call]:
    return {model: context.call(run, model) for model in context.members}


STEP = Step(
    number=1,
    key="analysis",
    name="Analysis",
    kind=Kind.MARKDOWN,
    prompt="stage1_analysis.v3",
    calls=calls,
    takers=Takers(Who.COUNCIL),
)
