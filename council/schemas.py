"""The JSON the council writes in Stage 2 (peer review) and Stage 5 (final review vote).

One module for the prompt (it shows the shape), the validator (the pipeline checks every reply) and the UI
(a step's `read` parses a stored artifact back through `parse_reply`). No ORM, no HTTP; which step stores
which schema is said by the step registry (council/stages/).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LABEL_PATTERN = r"^[A-Z]{1,2}$"


M = TypeVar("M", bound=BaseModel)


class InvalidReply(ValueError):
    """A Stage 2/5 reply that is not the JSON the stage asks for; the message is sent back to the model."""


class _Strict(BaseModel):
    # Models add chatter fields now and then; ignoring them is harmless, missing required ones is not.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class AnalysisReview(_Strict):
    analysis_label: str = Field(pattern=LABEL_PATTERN)
    strengths: list[str] = Field(default_factory=list)
    weaknesses: list[str] = Field(default_factory=list)
    missing_or_unclear: list[str] = Field(default_factory=list)
    accuracy_issues: list[str] = Field(default_factory=list)
    risk_of_overreach: str = ""


class PeerReview(_Strict):
    """Stage 2: one reviewer's reviews of every other analysis, and a ranking of them."""

    reviews: list[AnalysisReview]
    ranking_best_to_worst: list[str]
    overall_notes: str = ""

    @model_validator(mode="after")
    def _labels_consistent(self, info: Any) -> PeerReview:
        labels = [review.analysis_label for review in self.reviews]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"more than one review for analysis {', '.join(duplicates)}")
        if sorted(self.ranking_best_to_worst) != sorted(labels):
            raise ValueError(
                "ranking_best_to_worst must list each reviewed analysis exactly once "
                f"(reviewed: {', '.join(labels) or 'none'}; ranked: {', '.join(self.ranking_best_to_worst) or 'none'})"
            )
        expected = (info.context or {}).get("expected_labels") if info is not None else None
        if expected is not None and sorted(labels) != sorted(expected):
            raise ValueError(
                f"reviews must cover exactly analyses {', '.join(sorted(expected))}, one each "
                f"(got {', '.join(labels) or 'none'})"
            )
        return self


class FinalReview(_Strict):
    """Stage 5: one council member's vote on the consolidation."""

    vote: Literal["APPROVE", "REVISE"]
    required_changes: list[str] = Field(default_factory=list)
    optional_changes: list[str] = Field(default_factory=list)
    quality_score_1to10: int = Field(ge=1, le=10)

    @field_validator("vote", mode="before")
    @classmethod
    def _vote_upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("quality_score_1to10", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # "8" and 8.0 are fine; 7.5 is not a score on this scale.
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("quality_score_1to10 must be a whole number from 1 to 10")
        return value

    @model_validator(mode="after")
    def _approve_means_no_required_changes(self) -> FinalReview:
        if self.vote == "APPROVE" and self.required_changes:
            raise ValueError(
                "APPROVE with required_changes is contradictory: vote REVISE, or move them to optional_changes"
            )
        return self


PEER_REVIEW_EXAMPLE = {
    "reviews": [
        {
            "analysis_label": "A",
            "strengths": ["…"],
            "weaknesses": ["…"],
            "missing_or_unclear": ["…"],
            "accuracy_issues": ["…"],
            "risk_of_overreach": "…",
        }
    ],
    "ranking_best_to_worst": ["A", "…"],
    "overall_notes": "…",
}

FINAL_REVIEW_EXAMPLE = {
    "vote": "APPROVE or REVISE",
    "required_changes": ["…"],
    "optional_changes": ["…"],
    "quality_score_1to10": 8,
}

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.DOTALL)


def extract_json_object(text: str) -> dict[str, Any]:
    """The one JSON object in a reply: bare, or inside a ```json fence, or with a little prose around it."""
    candidates = [match.group(1) for match in _FENCE.finditer(text)]
    stripped = text.strip()
    candidates.append(stripped)
    if "{" in stripped and "}" in stripped:
        candidates.append(stripped[stripped.index("{") : stripped.rindex("}") + 1])
    last_error = "no JSON object found"
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as exc:
            last_error = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            continue
        if isinstance(value, dict):
            return value
        last_error = "the JSON is not an object"
    raise InvalidReply(last_error)


def _readable(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_reply(schema: type[M], text: str, *, context: dict[str, Any] | None = None) -> M:
    """A reply (or a stored artifact) validated against a step's schema; InvalidReply says what is wrong."""
    data = extract_json_object(text)
    try:
        return schema.model_validate(data, context=context)
    except ValidationError as exc:
        raise InvalidReply(_readable(exc)) from None


def parse_peer_review(text: str, *, expected_labels: Sequence[str] | None = None) -> PeerReview:
    """Validate a Stage 2 reply. `expected_labels` are the analyses this reviewer was shown (not its own)."""
    context = {"expected_labels": list(expected_labels)} if expected_labels is not None else None
    return parse_reply(PeerReview, text, context=context)


def parse_final_review(text: str) -> FinalReview:
    return parse_reply(FinalReview, text)


EXAMPLES: dict[type[BaseModel], dict[str, Any]] = {
    PeerReview: PEER_REVIEW_EXAMPLE,
    FinalReview: FINAL_REVIEW_EXAMPLE,
}


def example_json(schema: type[BaseModel]) -> str:
    """The shape shown to the model in the prompt, from the same module that validates the reply."""
    return json.dumps(EXAMPLES[schema], indent=2, ensure_ascii=False)
