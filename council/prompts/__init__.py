"""Versioned prompt templates, one file per stage: `stage<n>_<name>.v<k>.md`.

A template has a `[[system]]` section and a `[[user]]` section. `{{name}}` placeholders are filled in one
pass, so text pasted in (a report, an earlier stage's output) is never itself treated as a template.
To change a prompt, add the next version's file and point the step's registry entry (`STEP.prompt` at the
end of its module in council/stages/) at it: runs record which versions they used (Run.prompt_versions), so
old runs stay explainable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent

_SECTION = re.compile(r"^\[\[(system|user)\]\]\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str
    user: str

    def render(self, **values: str) -> tuple[str, str]:
        return render(self.system, values), render(self.user, values)


def render(template: str, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"prompt placeholder {{{{{name}}}}} has no value")
        return str(values[name])

    return _PLACEHOLDER.sub(fill, template)


@cache
def load(version: str) -> PromptTemplate:
    """`version` is a file stem such as "stage1_analysis.v1"."""
    text = (PROMPT_DIR / f"{version}.md").read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    # split() gives [preamble, "system", body, "user", body]; the preamble is a comment for maintainers.
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if set(sections) != {"system", "user"}:
        raise ValueError(f"prompt {version} needs one [[system]] and one [[user]] section")
    return PromptTemplate(version=version, system=sections["system"], user=sections["user"])
