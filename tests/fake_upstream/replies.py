"""What the fake models say: stage-aware replies, plainly marked as fake, valid for every council stage.

The stage comes from its line in the prompt: `qEEG Council — Stage <n>: <Name>`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

FAKE_MARK = "> FAKE UPSTREAM OUTPUT — not a real model"
END_MARKER = "<!-- END OF REPORT -->"
CONTINUE_PREFIX = "Continue exactly where you stopped"
INVALID_PREFIX = "Your reply was not valid"

_STAGE_LINE = re.compile(r"^qEEG Council\s*[—-]+\s*Stage\s*(\d+)\s*:\s*([^\n]*)", re.MULTILINE)
_ANALYSIS_LABEL = re.compile(r"^##\s+Analysis\s+([A-Z]{1,2})\s*$", re.MULTILINE)
_PAGE_MARK = re.compile(r"^=== PAGE (\d+) / (\d+) ===", re.MULTILINE)
_REVISION_LABEL = re.compile(r"^##\s+Revision\s+([A-Z]{1,2})\s*$", re.MULTILINE)
_REQUIRED = re.compile(
    r"^## Required changes from the final review\s*\n(.*?)^## Optional changes suggested",
    re.MULTILINE | re.DOTALL,
)
_NUMBERED = re.compile(r"^(\d+)\.\s+\S", re.MULTILINE)
_PAGE_FACTS_LINE = re.compile(r"^qEEG Council\s*[—-]+\s*Page facts:\s*page\s*(\d+)", re.MULTILINE)

STAGE_NAMES = {
    1: "Analysis",
    2: "Peer review",
    3: "Revision",
    4: "Consolidation",
    5: "Final review",
    6: "Final draft",
}


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
        )
    return ""


def image_count(messages: list[dict[str, Any]]) -> int:
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(
                1
                for part in content
                if isinstance(part, dict) and part.get("type") in ("image_url", "input_image")
            )
    return count


def parse_stage(messages: list[dict[str, Any]]) -> int | None:
    """The stage named on a line of its own (`qEEG Council — Stage <n>: <Name>`) in the first message that
    has one (after the shared start of the user message, or first in an older system message); None for a
    prompt from elsewhere."""
    for message in messages:
        match = _STAGE_LINE.search(message_text(message))
        if match:
            return int(match.group(1))
    return None


def page_facts_page(messages: list[dict[str, Any]]) -> int | None:
    """The page a vision reader's page-facts request asks about (it carries the page image); None else."""
    if not image_count(messages):
        return None
    for text in user_texts(messages):
        match = _PAGE_FACTS_LINE.search(text)
        if match:
            return int(match.group(1))
    return None


def page_facts_reply(*, model: str, page: int) -> str:
    # The fake cannot read images: a valid reply that reads nothing, and says so.
    return json.dumps(
        {"page": page, "facts": [], "unreadable": [f"FAKE UPSTREAM ({model}): cannot read images"]}
    )


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [message_text(m) for m in messages if m.get("role") == "user"]


def continuation_count(messages: list[dict[str, Any]]) -> int:
    return sum(1 for text in user_texts(messages) if text.lstrip().startswith(CONTINUE_PREFIX))


def invalid_retry_count(messages: list[dict[str, Any]]) -> int:
    return sum(1 for text in user_texts(messages) if text.lstrip().startswith(INVALID_PREFIX))


def analysis_labels(messages: list[dict[str, Any]]) -> list[str]:
    labels: list[str] = []
    for text in user_texts(messages):
        for label in _ANALYSIS_LABEL.findall(text):
            if label not in labels:
                labels.append(label)
    return labels


def _rng(model: str, stage: int | None, salt: str = "") -> random.Random:
    # Deterministic per model and stage, so runs against the fake are reproducible.
    seed = hashlib.sha256(f"{model}|{stage}|{salt}".encode()).hexdigest()
    return random.Random(int(seed[:16], 16))


def markdown_report(*, model: str, stage: int, messages: list[dict[str, Any]]) -> str:
    """A complete markdown reply for any markdown stage (1, 3, 4, 6, …), ending with the end marker."""
    name = STAGE_NAMES.get(stage, "Report")
    prompt = "\n".join(user_texts(messages))
    pages = _PAGE_MARK.findall(prompt)
    page_total = pages[0][1] if pages else "?"
    images = image_count(messages)
    rng = _rng(model, stage)
    alpha = rng.choice(["posterior dominant", "slowed", "within normal limits"])
    theta = rng.choice(["elevated frontally", "unremarkable", "mildly increased at Fz"])
    coherence = rng.choice(["reduced interhemispheric", "within normal limits", "increased frontal"])
    return (
        f"{FAKE_MARK} ({model}, Stage {stage}: {name}). Nothing below was written by a language model; "
        "it is placeholder text for trying the application.\n\n"
        f"# {name} (fake)\n\n"
        f"This fake {name.lower()} saw {len(pages)} page marker(s) in the source report text "
        f"(pages in report: {page_total}) and {images} page image(s).\n\n"
        "## Findings (fake)\n\n"
        "| Measure | Fake finding | Page |\n"
        "|---|---|---|\n"
        f"| Alpha | {alpha} | (p. 1) |\n"
        f"| Theta | {theta} | (p. 1) |\n"
        f"| Coherence | {coherence} | (p. 2) |\n\n"
        "## Notes (fake)\n\n"
        f"- This text comes from the fake upstream for model `{model}`.\n"
        "- No clinical meaning: do not use it for any patient.\n"
        "- Replace the fake upstream with a real CLIProxyAPI for real output.\n\n"
        f"{_stage_tail(model=model, stage=stage, prompt=prompt)}"
        f"{END_MARKER}\n"
    )


def _stage_tail(*, model: str, stage: int, prompt: str) -> str:
    """The closing section a stage's prompt asks for, in its form: Stage 4 says where the revisions disagreed
    (by their labels), Stage 6 says per numbered required change whether it applied it."""
    if stage == 4:
        labels = list(dict.fromkeys(_REVISION_LABEL.findall(prompt)))
        if len(labels) < 2:
            return "## Where the council disagreed\n\nThe revisions did not disagree on any point.\n\n"
        minority = [_rng(model, stage, "tail").choice(labels)]
        majority = [label for label in labels if label not in minority]
        return (
            "## Where the council disagreed\n\n"
            "- **Point:** FAKE: whether frontal theta is elevated\n"
            f"  - **Majority ({', '.join(majority)}):** FAKE: theta is elevated at Fz\n"
            f"  - **Minority ({', '.join(minority)}):** FAKE: theta is within normal limits\n"
            "  - **Resolution:** FAKE: the report's table is followed (p. 1)\n\n"
        )
    if stage == 6:
        found = _REQUIRED.search(prompt)
        numbers = [int(n) for n in _NUMBERED.findall(found.group(1))] if found else []
        if not numbers:
            return ""
        # Deterministic variety: a model with an odd-length id does not apply the last of several changes.
        refused = numbers[-1] if len(numbers) > 1 and len(model) % 2 else None
        lines = [
            f"{n}. NOT APPLIED — FAKE: the source report does not support it (p. 1)"
            if n == refused
            else f"{n}. APPLIED — FAKE: done in the Findings section"
            for n in numbers
        ]
        return "## Required changes: applied or not\n\n" + "\n".join(lines) + "\n\n"
    return ""


def padded(full: str, *, chars: int, model: str, stage: int) -> str:
    """A markdown reply lengthened to at least `chars` characters with fake findings, as long as a real
    model's output (for measuring what later prompts carry); the end marker stays last."""
    body = full[: full.rindex(END_MARKER)] if END_MARKER in full else full
    rng = _rng(model, stage, "padding")
    sites = ["Fp1", "Fp2", "F3", "F4", "Fz", "C3", "C4", "Cz", "P3", "P4", "Pz", "O1", "O2", "T3", "T4"]
    bands = ["delta", "theta", "alpha", "beta", "high beta"]
    lines = ["## Further findings (fake)\n"]
    size = len(body) + len(lines[0])
    while size < chars:
        line = (
            f"- FAKE: {rng.choice(bands)} power at {rng.choice(sites)} is {rng.uniform(-3, 3):+.2f} SD from the "
            f"norm (p. {rng.randint(1, 6)}); this placeholder sentence only makes the reply as long as a real one.\n"
        )
        lines.append(line)
        size += len(line)
    return body + "\n".join(["", *lines]) + "\n" + END_MARKER + "\n"


def truncated_piece(full: str, *, part: int, parts: int) -> str:
    """Piece `part` (0-based) of a reply cut into `parts` pieces; only the last piece has the end marker."""
    body = full[: full.rindex(END_MARKER)] if END_MARKER in full else full
    size = max(1, len(body) // parts)
    if part < parts - 1:
        return body[part * size : (part + 1) * size]
    return body[part * size :] + END_MARKER + "\n"


def peer_review(*, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    labels = analysis_labels(messages) or ["A"]
    rng = _rng(model, 2)
    ranking = labels[:]
    rng.shuffle(ranking)
    return {
        "reviews": [
            {
                "analysis_label": label,
                "strengths": [f"FAKE: analysis {label} cites pages for its numbers."],
                "weaknesses": [f"FAKE: analysis {label} could say more about artifact rejection."],
                "missing_or_unclear": ["FAKE: eyes-open vs eyes-closed conditions are not compared."],
                "accuracy_issues": [],
                "risk_of_overreach": "FAKE: low — findings are framed as supportive, not diagnostic.",
            }
            for label in labels
        ],
        "ranking_best_to_worst": ranking,
        "overall_notes": f"FAKE UPSTREAM OUTPUT from {model} — not a real model.",
    }


def final_vote(*, model: str, vote: str) -> dict[str, Any]:
    if vote == "REVISE":
        return {
            "vote": "REVISE",
            # The first change is one every reviser asks for (pooled once); the second is this model's own.
            "required_changes": [
                f"FAKE ({model}): state the montage and reference used.",
                _rng(model, 5).choice(
                    [
                        "FAKE: cite the page for the theta/beta ratio.",
                        "FAKE: remove the diagnostic wording from the summary.",
                        "FAKE: say which sessions the table compares.",
                    ]
                ),
            ],
            "optional_changes": ["FAKE: shorten the summary."],
            "quality_score_1to10": 6,
        }
    return {
        "vote": "APPROVE",
        "required_changes": [],
        "optional_changes": [f"FAKE ({model}): add a glossary of abbreviations."],
        "quality_score_1to10": 8,
    }


def invalid_json_reply(*, model: str, stage: int) -> str:
    # Prose with a broken object: what a model that ignored the format instructions might send.
    return f"FAKE UPSTREAM OUTPUT ({model}, Stage {stage}): here is my answer {{'vote': maybe, }}"


def json_reply(obj: dict[str, Any], *, fence: bool) -> str:
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    return f"```json\n{text}\n```" if fence else text


_PATIENT_LINE = re.compile(r"^qEEG Council\s*[—-]+\s*Patient version\s*$", re.MULTILINE)
_CITED = re.compile(r"[^.\n]*\d[^.\n]*(?:\(p\. ?\d+\)|\[p\d+\])[^.\n]*\.?")


def is_patient_version(messages: list[dict[str, Any]]) -> bool:
    """The patient-version prompt (council/prompts/patient_version.v*.md) names itself on a line."""
    return any(_PATIENT_LINE.search(message_text(m)) for m in messages)


def patient_version(*, model: str, messages: list[dict[str, Any]]) -> str:
    """A plain-language summary in the shape the patient-version prompt asks for, plainly fake: second
    person, no names, no diagnosis; its appendix copies up to five sentences of the signed write-up that
    cite a page for a number, word for word (what the prompt tells a real model to do)."""
    prompt = "\n".join(user_texts(messages))
    write_up = prompt.split("## The clinician's signed write-up", 1)[-1].split("## Your task", 1)[0]
    cited = [m.group(0).strip(" -*") for m in _CITED.finditer(write_up)][:5]
    appendix = "\n".join(f"- {line}" for line in cited) or "- The signed report cites no values by page."
    return (
        f"{FAKE_MARK} ({model}, patient version). Nothing below was written by a language model; it is "
        "placeholder text for trying the application.\n\n"
        "# Your qEEG results: a summary for you (fake)\n\n"
        "## What was done\n\n"
        "You had a recording of the electrical activity of your brain, taken with small sensors on your "
        "scalp while you rested and did simple tasks. A computer compared it with recordings of many other "
        "people.\n\n"
        "## What the results showed\n\n"
        "- Some of your brain's rhythms were a little different from the comparison group (fake).\n"
        "- Other parts of the recording were in the usual range (fake).\n\n"
        "## What this may mean\n\n"
        "Results like these can be seen in many people and do not by themselves show that you have, or do "
        "not have, any condition. They are one piece of information among many.\n\n"
        "## Next steps\n\n"
        "- Talk these results over with your clinician, who knows your history.\n"
        "- Ask your clinician whether a repeat recording would help.\n\n"
        "## Technical appendix\n\n"
        f"{appendix}\n\n"
        f"{END_MARKER}\n"
    )


def generic_reply(*, model: str, messages: list[dict[str, Any]]) -> str:
    last = user_texts(messages)[-1:] or [""]
    return f"{FAKE_MARK} ({model}). You said: {last[0][:200]}"
