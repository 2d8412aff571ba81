"""The patient version: one model turns the clinician's signed write-up (already de-identified by the
caller, runs.sources) into a plain-language summary for the patient. No ORM, no HTTP: a prompt and the
markdown reply rule every stage uses (continued when cut off, end marker removed)."""

from __future__ import annotations

from council import prompts
from council.stages.base import (
    CallLimits,
    CompletionClient,
    StageOutput,
    complete_markdown,
    context_block,
    system_user,
)

PROMPT = "patient_version.v1"


def messages(*, write_up: str, clinical_context: dict[str, str]) -> list[dict]:
    """The prompt: the rules as the system message, then the context and the signed text."""
    system, user = prompts.load(PROMPT).render(
        clinical_context=context_block(clinical_context), write_up=write_up.strip()
    )
    return system_user(system, user)


async def write_patient_version(
    client: CompletionClient,
    model: str,
    *,
    write_up: str,
    clinical_context: dict[str, str],
    limits: CallLimits,
) -> StageOutput:
    """The model's summary (markdown without the end marker) and its usage; ModelFailed when it wrote
    nothing usable. The client's guard refuses the call if an identifier is still in it."""
    return await complete_markdown(
        client, model, messages(write_up=write_up, clinical_context=clinical_context), limits
    )
