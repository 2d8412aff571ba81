"""What every stage shares: its inputs, its call limits, the two reply rules, and the result it hands back.

The markdown rule: the prompt asks for a final `<!-- END OF REPORT -->` line; a reply without it (cut off at
the token limit, or simply stopped) is continued with `Continue exactly where you stopped…` up to
`max_continuations` times, the parts joined, and the marker removed before anything is stored.

The JSON rule: a Stage 2/5 reply that does not validate is sent back with `Your reply was not valid …` and
the validation error, up to `json_retries` times; then the model fails for that stage (`ModelFailed`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from council import prompts
from council.schemas import InvalidReply

END_MARKER = "<!-- END OF REPORT -->"
CONTINUE_MESSAGE = (
    "Continue exactly where you stopped. Do not repeat anything you already wrote and do not add a "
    f"preamble. When the report is complete, end with the line {END_MARKER}"
)
# Starting only where a run of spaces starts (the same leftmost matches): tried at every space of a reply's
# 100 KB of them, the leading [ \t]* made the search quadratic (18 s with the runner's event loop held, past
# RUN_STALE_SECONDS: the run was taken for dead).
_MARKER_LINE = re.compile(r"(?<![ \t])[ \t]*<!--\s*END OF REPORT\s*-->[ \t]*\n?", re.IGNORECASE)

T = TypeVar("T")
NO_FACT_TABLE = (
    "(No fact table was read from this report: every number must come from the report text below.)"
)


class CompletionLike(Protocol):
    text: str
    endpoint: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int
    attempts: int
    finish_reason: str | None


class CompletionClient(Protocol):
    """The slice of council.client.CLIProxyClient the stages use (tests pass small fakes)."""

    async def complete(
        self,
        model: str,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> CompletionLike: ...


class ModelFailed(Exception):
    """This model produced nothing usable for this stage; the reason is kept on its artifact."""

    def __init__(self, message: str, *, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


def context_block(clinical_context: dict[str, str]) -> str:
    """The clinical context as prompts give it: one `- item: detail` line each."""
    if not clinical_context:
        return "(No clinical context was entered for this patient.)"
    return "\n".join(f"- {key}: {value}" for key, value in clinical_context.items())


@dataclass(frozen=True)
class CouncilInput:
    """What every stage gets, besides earlier council output: the source report and the patient."""

    report_text: str
    clinical_context: dict[str, str]
    page_images: tuple[str, ...] = ()  # data: URLs of page PNGs, offered to Stage 1 when configured
    fact_table: str = ""  # the run's fact table as markdown, de-identified: the authoritative numbers

    def context_block(self) -> str:
        return context_block(self.clinical_context)

    def prompt(self, version: str, **fields: str) -> tuple[str, str]:
        """A step's prompt (its registry entry names the version) as (system, user). Every step gets the
        source report, its fact table and the patient's context here, whatever earlier council output it
        is also given."""
        return prompts.load(version).render(
            clinical_context=self.context_block(),
            fact_table=self.fact_table or NO_FACT_TABLE,
            report_text=self.report_text,
            **fields,
        )


@dataclass(frozen=True)
class CallLimits:
    max_tokens: int | None = None
    max_continuations: int = 2
    json_retries: int = 2
    temperature: float | None = None


@dataclass
class Usage:
    """Summed over every upstream call one (stage, model) took: continuations and JSON retries included."""

    endpoint: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int = 0
    attempts: int = 0
    calls: int = 0

    def add(self, completion: CompletionLike) -> None:
        self.endpoint = completion.endpoint
        if completion.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + completion.prompt_tokens
        if completion.completion_tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + completion.completion_tokens
        self.latency_ms += completion.latency_ms
        self.attempts += completion.attempts
        self.calls += 1


@dataclass
class StageOutput:
    """Text to store (markdown without the marker, or canonical JSON), its usage, and any caveat."""

    text: str
    usage: Usage
    note: str = ""
    parsed: Any = None  # the validated Stage 2/5 model
    # What the step read from the reply besides its text, stored on the artifact (Stage 6: which required
    # changes the draft says it applied).
    details: dict[str, Any] | None = None


def system_user(system: str, user: str | list[dict]) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def strip_marker(text: str) -> tuple[str, bool]:
    """Remove every end marker; say whether the reply had one."""
    found = bool(_MARKER_LINE.search(text))
    return _MARKER_LINE.sub("", text).rstrip() + "\n", found


async def complete_markdown(
    client: CompletionClient, model: str, messages: list[dict], limits: CallLimits
) -> StageOutput:
    usage = Usage()
    conversation = list(messages)
    parts: list[str] = []
    for continuation in range(limits.max_continuations + 1):
        completion = await client.complete(
            model, conversation, max_tokens=limits.max_tokens, temperature=limits.temperature
        )
        usage.add(completion)
        parts.append(completion.text)
        _, finished = strip_marker(completion.text)
        if finished or continuation == limits.max_continuations:
            break
        conversation = [
            *conversation,
            {"role": "assistant", "content": completion.text},
            {"role": "user", "content": CONTINUE_MESSAGE},
        ]
    # A continuation picks up mid-sentence, so parts are joined as they are; only the end is tidied.
    text, _ = strip_marker("".join(parts))
    if not text.strip():
        raise ModelFailed("the model returned no text", usage=usage)
    note = (
        ""
        if finished
        else f"The reply never reached the end marker after {limits.max_continuations} continuation(s); "
        "it may be incomplete."
    )
    return StageOutput(text=text, usage=usage, note=note)


async def complete_json(
    client: CompletionClient,
    model: str,
    messages: list[dict],
    limits: CallLimits,
    *,
    parse: Callable[[str], T],
    dump: Callable[[T], str],
    what: str,
) -> StageOutput:
    usage = Usage()
    conversation = list(messages)
    error = ""
    for retry in range(limits.json_retries + 1):
        completion = await client.complete(
            model, conversation, max_tokens=limits.max_tokens, temperature=limits.temperature
        )
        usage.add(completion)
        try:
            parsed = parse(completion.text)
        except InvalidReply as exc:
            error = str(exc)
        else:
            return StageOutput(text=dump(parsed), usage=usage, parsed=parsed)
        if retry == limits.json_retries:
            break
        conversation = [
            *conversation,
            {"role": "assistant", "content": completion.text},
            {
                "role": "user",
                "content": f"Your reply was not valid {what}: {error}\n\n"
                "Reply again with only the corrected JSON object, in exactly the shape asked for.",
            },
        ]
    raise ModelFailed(f"invalid {what} after {limits.json_retries + 1} attempt(s): {error}", usage=usage)
